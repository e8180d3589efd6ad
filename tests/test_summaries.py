"""The chapters' typed summaries (eurosat_lib.summaries): the committed files load and write back
unchanged, each chapter's ``summarize`` derives the committed numbers from the committed tables,
``save_summary`` writes typed summaries (and turns the older numbers-mapping form into one), and a
wrong chapter or an unknown number is caught or kept, not dropped."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import REPO
from eurosat_lib import summaries as S

RUNS = REPO / "book" / "runs" / "cpu"
CHAPTERS = [cls.NOTEBOOK for cls in S.SUMMARIES[1:]]


def _committed(notebook: str) -> dict:
    return json.loads((RUNS / notebook / S.summary_file(notebook)).read_text())


def _P(notebook: str, out_dir: Path) -> SimpleNamespace:
    """Parameters as a chapter's dataclass holds them: the notebook is the class's, not a field."""
    d = _committed(notebook)
    return type("Params", (SimpleNamespace,), {"notebook": notebook})(out_dir=str(out_dir), **d["parameters"])


def _frame(notebook: str, name: str) -> pd.DataFrame:
    return pd.DataFrame(_committed(notebook)["tables"][name])


@pytest.mark.parametrize("notebook", [cls.NOTEBOOK for cls in S.SUMMARIES])
def test_committed_summaries_load_and_write_back_unchanged(notebook):
    d = _committed(notebook)
    summary = S.load_summary(RUNS / notebook, notebook)
    assert isinstance(summary, S.summary_type(notebook))
    assert summary.to_json() == d
    assert list(summary.to_json()) == list(d)  # the file's key order too


def test_numbers_are_typed_fields():
    s = S.load_summary(RUNS / "02_negative_transfer", "02_negative_transfer")
    assert s.case_n == 100 and isinstance(s.negative_cases, tuple) and "shuffled_source_frozen" in s.negative_cases
    t = S.load_summary(RUNS / "06_truncation", "06_truncation")
    assert t.tolerance == pytest.approx(0.01) and t.chosen_cut == t.full
    with pytest.raises(dataclasses_error()):
        t.tolerance = 0.5  # frozen


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


def test_a_summary_of_another_chapter_is_refused_and_unknown_numbers_are_kept(tmp_path):
    d = _committed("05_backbones")
    with pytest.raises(ValueError, match="05_backbones"):
        S.TransferSummary.from_json(d)
    d["numbers"]["added_later"] = 1.5
    s = S.BackbonesSummary.from_json(d)
    assert s.extra == {"added_later": 1.5} and s.to_json()["numbers"]["added_later"] == 1.5
    with pytest.raises(KeyError, match="no summary type"):
        S.summary_type("99_nothing")


def test_transfer_summarize_gives_the_committed_numbers(tmp_path):
    nb = "01_transfer_learning"
    s = S.transfer.summarize(_P(nb, tmp_path), *(_frame(nb, t) for t in ("compare", "resolution", "preprocessing", "heads")))
    want = _committed(nb)["numbers"]
    assert s.best_resolution == want["best_resolution"] and s.correct_preprocessing == want["correct_preprocessing"]
    assert s.deep_head == want["deep_head"]
    for k in ("frozen_test_accuracy", "scratch_test_accuracy", "small_cnn_test_accuracy"):
        assert getattr(s, k) == pytest.approx(want[k], abs=1e-9), k
    assert s.frozen_test_accuracy > s.small_cnn_test_accuracy > s.scratch_test_accuracy


def test_negative_transfer_summarize_sorts_cases_by_verdict(tmp_path):
    nb = "02_negative_transfer"
    answer = _committed(nb)["numbers"].get("similarity_answer")  # section 3's words, chosen by its own verdicts
    s = S.negative_transfer.summarize(_P(nb, tmp_path), *(_frame(nb, t) for t in ("gap_vs_n", "cases", "gap_runs", "case_runs")),
                                      similarity_answer=answer)  # fmt: skip
    assert s.numbers() == _committed(nb)["numbers"]
    cases = _frame(nb, "cases").assign(verdict="negative")
    s = S.negative_transfer.summarize(_P(nb, tmp_path), _frame(nb, "gap_vs_n"), cases, _frame(nb, "gap_runs"), _frame(nb, "case_runs"))
    assert s.positive_cases == () and len(s.negative_cases) == len(cases)


def test_finetune_summarize_reads_the_recipe_record(tmp_path):
    nb = "03_finetune"
    from eurosat_lib.experiments import crossover as CX

    recipe = json.loads((RUNS / nb / "recipe" / "record.json").read_text())
    want = _committed(nb)["numbers"]
    diffs = _frame(nb, "crossover")
    s = S.finetune.summarize(_P(nb, tmp_path), recipe, *(_frame(nb, t) for t in ("depth", "learning_rate", "batchnorm")),
                             lr_chosen=want["lr_chosen"], crossover=diffs,
                             crossovers=[CX.crossover_size(diffs, arm) for arm in CX.FINETUNED])  # fmt: skip
    assert set(s.numbers()) == set(want)
    for k, v in want.items():
        assert getattr(s, k) == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), k
    assert s.recipe_test_accuracy == recipe["metrics"]["test"]["accuracy"] and s.crossover_top_n == want.get("crossover_top_n")


def test_overfitting_summarize_reads_the_gap_table(tmp_path):
    nb = "04_overfitting"
    want = _committed(nb)["numbers"]
    gm = json.loads((RUNS / nb / "good_model" / "record.json").read_text())["metrics"]["test"]
    assert gm["accuracy"] == pytest.approx(want["good_model_test_accuracy"], abs=1e-12) and gm["n"] == 5400
    good_train = json.loads((RUNS / nb / "good_model" / "train_metrics.json").read_text())["metrics"]
    s = S.overfitting.summarize(_P(nb, tmp_path), gm, _frame(nb, "gaps").set_index("model"), _frame(nb, "fraction_curve"),
                                _frame(nb, "regularisation"), _frame(nb, "selection_leak"), _frame(nb, "test_spread").set_index("scenario"),
                                good_model_train=good_train)  # fmt: skip
    for k, v in want.items():
        assert getattr(s, k) == (pytest.approx(v, abs=1e-9) if isinstance(v, float) else v), k
    assert s.to_json()["tables"] == _committed(nb)["tables"]


def test_backbones_and_truncation_summarize(tmp_path):
    nb = "05_backbones"
    want = _committed(nb)["numbers"]
    s = S.backbones.summarize(_P(nb, tmp_path), _frame(nb, "leaderboard").set_index("candidate"), _frame(nb, "runs"),
                              _frame(nb, "final"), want["chosen"])
    assert s.chosen == want["chosen"] and s.test_n == want["test_n"]
    assert s.chosen_test_accuracy == pytest.approx(want["chosen_test_accuracy"], abs=1e-9)
    nb = "06_truncation"
    want = _committed(nb)["numbers"]
    choice = {k: v for k, v in want.items() if k != "chosen_cut"} | {"not_a_number": [1, 2]}
    s = S.truncation.summarize(_P(nb, tmp_path), _frame(nb, "cuts").set_index("block"), choice,
                               _frame(nb, "test").set_index("block"), _frame(nb, "finetune").set_index("block"),
                               test_runs=_frame(nb, "test_runs"), finetune_runs=_frame(nb, "finetune_runs"))
    assert s.numbers() == want  # the choice's scalars only
    assert s.to_json()["tables"] == _committed(nb)["tables"]


@pytest.mark.parametrize("notebook", CHAPTERS)
def test_save_summary_writes_the_committed_file_from_either_form(tmp_path, notebook):
    """The typed form and the older (numbers, tables, runs) form write the same file; rebuilt from the
    committed summary's own parts, it is the committed file (sources resolved against the book)."""
    from eurosat_lib.experiments import save_summary

    d = _committed(notebook)
    P = _P(notebook, tmp_path / "typed")
    tables = {k: pd.DataFrame(v) for k, v in d["tables"].items()}
    runs = [RUNS / notebook / r for r in d["runs"]]
    typed = S.summary_type(notebook).from_study(type(P)(**{**vars(P), "out_dir": str(RUNS / notebook)}), tables, runs,
                                                **d["numbers"])
    assert typed.to_json() == d
    written = json.loads(save_summary(P, typed).read_text())
    legacy_P = _P(notebook, tmp_path / "legacy")
    legacy = json.loads(save_summary(legacy_P, d["numbers"], tables, runs).read_text())
    assert written["numbers"] == legacy["numbers"] == d["numbers"]
    assert written["tables"] == legacy["tables"] == d["tables"]
    assert written["parameters"] == legacy["parameters"] == d["parameters"]


def test_save_summary_refuses_a_summary_of_another_chapter(tmp_path):
    from eurosat_lib.experiments import save_summary

    s = S.load_summary(RUNS / "05_backbones", "05_backbones")
    with pytest.raises(ValueError, match="05_backbones"):
        save_summary(_P("06_truncation", tmp_path), s)
    with pytest.raises(ValueError, match="typed summary"):
        save_summary(_P("05_backbones", tmp_path), s, tables={"x": []})


def test_render_markdown_names_its_source_and_needs_no_records():
    """Each section renders from its summary alone (no record context): headings, the source, no crash."""
    for cls in S.SUMMARIES:
        s = S.load_summary(RUNS / cls.NOTEBOOK, cls.NOTEBOOK)
        text = s.render_markdown("`SRC`")
        assert text.startswith("## ") and "`SRC`" in text, cls.NOTEBOOK


def test_md_table_keeps_cells_as_given():
    from eurosat_lib.summaries.render import md_table

    table = md_table([{"a": "1,000", "b": "0.50 %"}, {"a": "x | y"}], [("a", "A"), ("b", "B col")])
    assert table.splitlines() == ["| A | B col |", "|---|---|", "| 1,000 | 0.50 % |", "| x | y | – |"]


def test_results_page_and_chapter_2_state_the_same_interval():
    """The results page's gap interval is the chapter's: a table's numpy integers count as numbers
    (the page once dropped the test images' noise for them and printed a wider interval)."""
    import numpy as np
    import pandas as pd

    from eurosat_lib.experiments import negative_transfer as NT
    from eurosat_lib.summaries.negative_transfer import gap_rows
    from eurosat_lib.summaries.render import RecordContext, is_number

    assert is_number(np.int64(5400)) and is_number(np.float32(0.5)) and not is_number(float("nan")) and not is_number(None)
    runs = pd.DataFrame({"n_per_class": [5, 5, 5], "seed": [0, 1, 2], "err_transfer": [0.308, 0.320, 0.304],
                         "err_scratch": [0.550, 0.548, 0.512], "test_images": np.array([5400] * 3, dtype=np.int64)})  # fmt: skip
    runs["gap"] = runs["err_transfer"] - runs["err_scratch"]
    chapter = NT.summarise_gaps(runs, "n_per_class")
    page = gap_rows(chapter, runs, "n_per_class", RecordContext())[0]["ci"]
    assert page == f"{100 * chapter['gap_low'][0]:+.1f} to {100 * chapter['gap_high'][0]:+.1f}"


def test_compare_text_marks_every_verdict_that_a_still_improving_arm_enters():
    from eurosat_lib.stats import paired_diff
    from eurosat_lib.summaries.render import compare_text

    tie = paired_diff([0.85, 0.86, 0.84], [0.84, 0.87, 0.85], n_eval=1000)
    assert tie.verdict == "no measurable difference"
    assert compare_text(tie).endswith("**no measurable difference**")
    for a, b in ((), [["not converged"], [], []]), ([["not converged"], [], []], ()):
        assert "more training could change this" in compare_text(tie, a, b)
    worse = paired_diff([0.60, 0.61, 0.62], [0.85, 0.86, 0.84], n_eval=1000)
    assert "partly its budget" in compare_text(worse, [["not converged"]] * 3)
    # The higher arm still improving: the gap could only grow, the verdict stands unannotated.
    assert "still improving" not in compare_text(worse, (), [["not converged"]] * 3)
    assert compare_text(worse, [["chance-level"]]).startswith("not compared")
