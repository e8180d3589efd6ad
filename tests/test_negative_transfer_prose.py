"""Chapter 2's words follow its records: the reviewer's defects, each pinned by a check that the
old text failed. Built on small constructed tables (so each check can fail) and, where the defect
was about the committed records, on those records' own numbers (never on an interval's digits)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import REPO
from test_similarity import made_table  # the same constructed study tables
from eurosat_lib import summaries as S
from eurosat_lib.experiments import negative_transfer as NT
from eurosat_lib.experiments import similarity as SIM

RUNS = REPO / "book" / "runs" / "cpu"
TEMPLATE = REPO / "notebooks" / "02_negative_transfer.ipynb"


def _cells() -> dict[str, str]:
    return {c["id"]: "".join(c["source"]) for c in json.loads(TEMPLATE.read_text())["cells"]}


# ------------------------------------------------------------------------------------------
# Section 1: the data-size gaps (defects 1 and 7)
# ------------------------------------------------------------------------------------------


def section1_runs(whole_best_last=(True, False, True)) -> pd.DataFrame:
    """Two sizes, 3 seeds: 5 per class and the whole split (16,200 images, 1,620 per class on average)."""
    rows = []
    for n, size, images in ((5, 5, 50), (1620, "all", 16200)):
        for seed in range(3):
            last = n == 1620 and whole_best_last[seed]
            rows.append({"n_per_class": n, "size": size, "seed": seed, "err_transfer": 0.30 if n == 5 else 0.10 + 0.002 * seed,
                         "err_scratch": 0.55 if n == 5 else 0.17 - 0.003 * seed, "test_images": 5400,
                         "flags": "", "flags_transfer": "", "flags_scratch": "", "train_images": images,
                         "scratch_epochs": 12, "scratch_steps": 6084 if n == 1620 else 1200, "scratch_best_last": last,
                         "scratch_val_before": 0.824 + 0.01 * seed, "scratch_val_last": 0.836 + 0.01 * seed if last else 0.80,
                         "run": f"t{n}_{seed}", "run_scratch": f"s{n}_{seed}"})  # fmt: skip
    df = pd.DataFrame(rows)
    df["gap"] = df["err_transfer"] - df["err_scratch"]
    df.loc[df["seed"] == 1, "err_scratch"] += 0.01  # some spread over seeds
    df["gap"] = df["err_transfer"] - df["err_scratch"]
    return df


def reference_record(root: Path, accuracy: float = 0.9, epochs: int = 60) -> Path:
    """A finished longer-trained scratch run beside a chapter folder ``<root>/02_negative_transfer``."""
    folder = root / "reference" / S.negative_transfer.SCRATCH_REFERENCE
    folder.mkdir(parents=True)
    rec = {"status": "complete", "warnings": [], "params": {"image_size": 64, "seed": 0},
           "metrics": {"test": {"accuracy": accuracy, "n": 5400}}, "extra": {"train_size": 16200},
           "timings": {"phases": {"scratch": {"epochs_run": epochs}}}}  # fmt: skip
    (folder / "record.json").write_text(json.dumps(rec))
    return root / "02_negative_transfer"


def test_section_1_states_its_verdicts_for_the_scratch_budget_and_reads_the_longer_run(tmp_path):
    runs = section1_runs()
    by_n = NT.summarise_gaps(runs, "n_per_class")
    assert (by_n["verdict"] == "positive").all()
    out_dir = reference_record(tmp_path, accuracy=0.9123)
    ref = NT.reference_scratch(out_dir)
    assert ref["test_accuracy"] == pytest.approx(0.9123) and ref["epochs_run"] == 60 and ref["test_images"] == 5400
    text = NT.gap_paragraph(by_n, runs, ref)
    # "every size" only within the budget the arms had, and the budget named from the runs
    assert "At every size the ImageNet start lowered the test error" not in text
    assert "At every size, within these budgets" in text
    assert "the scratch arm trained 12 epochs (6,084 optimiser steps) at the whole split" in text
    assert "in 2 of 3 seeds its best validation accuracy came in its last epoch" in text
    # the longer run's number is read from its record (8.8 % = 1 - 0.9123), and what it means for the sign
    assert "test error of 8.8 %" in text and "trained 60 epochs" in text
    assert "the sign of the whole-split gap can flip" in text
    # a longer run that stayed above the frozen arm says so instead
    other = NT.reference_scratch(reference_record(tmp_path / "b", accuracy=0.5))
    assert "did not reverse the whole-split gap" in NT.gap_paragraph(by_n, runs, other)
    assert NT.reference_scratch(tmp_path / "nowhere" / "02_negative_transfer") is None


def test_the_whole_split_is_named_as_such_not_as_a_per_class_size():
    runs = section1_runs()
    by_n = NT.summarise_gaps(runs, "n_per_class")
    text = NT.gap_paragraph(by_n, runs)
    assert "**1,620** images per class" not in text and "at 1,620 images per class" not in text
    assert "**the whole split** (16,200 images; 1,620 per class on average)" in text
    assert NT.size_text(5, NT.whole_split_images(runs)) == "5 images per class"
    # the figure's tick too
    import matplotlib.pyplot as plt

    from eurosat_lib import plots

    fig = NT.label_whole_split(plots.plot_gap_vs_n(runs), runs)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["5", "all\n(16,200 images)"]
    plt.close("all")


def test_the_scratch_trace_reads_the_committed_whole_split_runs():
    """The reviewer's numbers: seeds 0 and 2 of the whole-split scratch arm peaked in their 12th and last epoch."""
    runs = [RUNS / "03_finetune" / "crossover" / f"scratch_all_seed{s}" for s in range(3)]
    if not all((r / "record.json").is_file() for r in runs):
        pytest.skip("the crossover study's whole-split scratch runs are not committed here")
    trace = [NT.scratch_trace(r) for r in runs]
    assert [t["scratch_best_last"] for t in trace] == [True, False, True]
    assert {t["scratch_epochs"] for t in trace} == {12} and {t["train_images"] for t in trace} == {16200}


def test_section_1_markdown_makes_no_claim_of_equal_care():
    text = _cells()["cell-03"]
    assert "not an under-trained baseline" not in text and "*within this budget*" in text


# ------------------------------------------------------------------------------------------
# Section 2: the cases (defects 8 and 11)
# ------------------------------------------------------------------------------------------


def case_runs() -> pd.DataFrame:
    rows = []
    for seed, gap in enumerate([-0.20, -0.05, -0.13]):
        rows.append({"case": "imagenet_aggressive", "seed": seed, "err_transfer": 0.55 + gap, "err_scratch": 0.55,
                     "gap": gap, "test_images": 1000, "flags_transfer": "not converged" if seed == 1 else "",
                     "flags_scratch": "", "flags": "not converged" if seed == 1 else ""})  # fmt: skip
    return pd.DataFrame(rows)


def test_a_flagged_case_carries_its_flag_into_the_sentence():
    runs = case_runs()
    by_case = NT.summarise_gaps(runs, "case")
    assert by_case["verdict"].iloc[0] == "inconclusive"
    line = NT.explain(by_case, runs)[0]
    assert "⚠ not converged (1/3 runs)" in line
    assert "more training could change this" in line


def test_gap_tables_show_points_not_fractions():
    html = NT.gap_table(NT.summarise_gaps(case_runs(), "case")).to_html()
    assert "-0.127" not in html and "-0.126667" not in html  # the raw fraction of the mean gap
    assert "-12.7" in html and "points" in html


def test_section_2_source_note_shows_its_flag_and_what_it_means():
    notes = {"source_train_size": 1000, "source_train_accuracy": 0.239, "source_val_accuracy": 0.065,
             "source_flags": ["chance-level"], "source_init": "scratch"}  # fmt: skip
    text = NT.source_note(notes)
    assert "6.5% ⚠ chance-level" in text and "the design working" in text and "memorising" in text
    idle = NT.source_note({**notes, "source_train_accuracy": 0.11})
    assert "learned nothing" in idle and "memorising" not in idle


def test_template_slips_are_fixed():
    from eurosat_lib.experiments import resolve_params

    cells = _cells()
    overview = " ".join(cells["cell-00"].split())
    assert "Student t over the seeds, widened by the test images' own sampling noise" in overview
    assert "`cpu` ≈ 15–20 min" not in overview
    cpu = resolve_params(NT.NOTEBOOK, profile="cpu")
    # the section 2 table lists only the shuffled-source cases the cpu profile runs (or says which profile runs the other)
    table = cells["cell-06"]
    assert "(or retrained)" not in table and "`shuffled_source_frozen`" in table
    assert "shuffled_source_finetuned" not in cpu.cases
    tries = cells["try-it-yourself"]
    assert f"-p case_n {cpu.case_n} " not in tries  # an exercise that changes nothing
    assert "gaps still positive" not in tries  # "positive" is the word for transfer that helped


# ------------------------------------------------------------------------------------------
# Section 3: the similarity study (defects 2, 3, 4 and 5)
# ------------------------------------------------------------------------------------------


SOURCES = pd.DataFrame([
    {"source": "in_domain", "train_images": 5000, "val_acc": 0.864, "train_acc": 0.825, "train_acc_prev": 0.807, "epochs": 6,
     "learned": True, "minutes": 3.0, "warnings": "", "budget": "6 epochs", "run": "a"},
    {"source": "in_domain_imagenet", "train_images": 5000, "val_acc": 0.98, "train_acc": 0.955, "train_acc_prev": 0.953,
     "epochs": 6, "learned": True, "minutes": 3.0, "warnings": "", "budget": "6 epochs", "run": "b"},
    {"source": "shuffled", "train_images": 5000, "val_acc": 0.184, "train_acc": 0.197, "train_acc_prev": 0.208, "epochs": 6,
     "learned": False, "minutes": 3.0, "warnings": "chance-level", "budget": "6 epochs", "run": "c"},
])  # fmt: skip


def chapter_like_table() -> pd.DataFrame:
    """The committed study's shape: the in-domain sources below ImageNet (one at some sizes only), the
    untrained shuffled source below scratch when frozen, tied with it when fine-tuned."""
    sizes = (5, 100, 1500)
    return made_table({
        ("imagenet", "frozen"): {n: 0.80 for n in sizes}, ("random", "scratch"): {n: 0.70 for n in sizes},
        ("in_domain", "frozen"): {n: 0.70 if n < 1500 else 0.62 for n in sizes},
        ("in_domain_imagenet", "frozen"): {5: 0.80, 100: 0.77, 1500: 0.77},
        ("shuffled", "frozen"): {n: 0.55 for n in sizes},
        ("imagenet", "finetune"): {n: 0.85 for n in sizes}, ("shuffled", "finetune"): {n: 0.70 for n in sizes},
    })  # fmt: skip


def test_narrative_reports_every_size_against_imagenet_and_a_why_for_mixed_verdicts():
    table = chapter_like_table()
    diffs = SIM.differences(table, SOURCES)
    text = SIM.narrative(table, diffs, "frozen", SOURCES)
    line = next(ln for ln in text.splitlines() if ln.startswith("  - against ImageNet") and "-3.0 points" in ln)
    # every size with its own verdict: a tie at 5, a loss at 100 and 1,500
    for size in ("at 5 images per class", "at 100 images per class", "at 1,500 images per class"):
        assert size in line
    assert line.count("**hurts**") == 2 and line.count("**no detectable difference**") == 1
    # the why says the verdicts differ, and explains the loss where it held
    assert "the verdict changes with the target's size" in line
    assert SIM.why("in_domain_imagenet", "imagenet", "worse", "frozen") in line
    assert SIM.WHY["in_domain_imagenet"]["imagenet"]["no detectable difference"] not in line


def test_a_small_in_domain_source_is_not_read_as_breadth_beating_closeness():
    table = chapter_like_table()
    diffs = SIM.differences(table, SOURCES)
    for arm in ("frozen", "finetune"):
        for v in ("better", "worse", "no measurable difference"):
            assert "breadth of the source beat its closeness" not in SIM.why("in_domain", "imagenet", v, arm)
    text = SIM.narrative(table, diffs, "frozen", SOURCES)
    assert "size and training of the source" in text and "not that breadth beats closeness" in text
    # the source's size and budget, read from its row, and its still-rising training accuracy
    assert "5,000 images of task A, 6 epochs, training accuracy still rising in its last epoch: 80.7% → 82.5%" in text
    assert "Neumann et al." in text
    answer = SIM.answer(diffs, "frozen", SOURCES)
    assert answer.startswith("**No, not similarity alone") and "breadth of the source mattered more" not in answer
    assert "not that breadth beats closeness" in answer and "5,000 images of task A" in answer
    # the chapter reconciles the result with the paper it cites, where the narrative is read
    cells = _cells()
    assert "neumann2019indomain" in cells["similarity-neumann"]


def test_an_unrelated_source_that_learned_nothing_is_no_finding_about_similarity():
    assert SIM.source_learned(0.197, 5000, 5) is False  # the committed shuffled source: 19.7 % on 5 classes
    assert SIM.source_learned(0.239, 1000, 10) is True  # chapter 2's section-2 source fitted some of its labels
    table = chapter_like_table()
    diffs = SIM.differences(table, SOURCES)
    assert set(diffs.loc[diffs["source"] == "shuffled", "source_learned"]) == {False}
    assert set(diffs.loc[diffs["source"] == "shuffled", "source_flags"]) == {"chance-level"}
    frozen = SIM.narrative(table, diffs, "frozen", SOURCES)
    shuffled = frozen.split("- **unrelated")[1]
    assert "⚠ chance-level" in shuffled and "learned nothing" in shuffled
    assert SIM.WHY["shuffled"]["random"]["hurts"] not in shuffled and "its features are a poorer start" not in shuffled
    assert "not transfer from an unrelated source" in shuffled
    tuned = SIM.narrative(table, diffs, "finetune", SOURCES).split("- **unrelated")[1]
    assert "**no detectable difference**" in tuned and "learned nothing" in tuned
    for arm in ("frozen", "finetune"):
        answer = SIM.answer(diffs, arm, SOURCES)
        assert "did hurt" not in answer and "fell below no pretraining" not in answer
        assert "no test of dissimilarity" in answer
    # without the sources' rows the old reading stands (the constructed study of test_similarity)
    assert "did hurt" in SIM.answer(SIM.differences(table), "frozen")
    # the table shows the source's flag beside every comparison it enters
    cell = SIM.difference_table(diffs, "frozen").loc[(SIM.SOURCE_LABELS["shuffled"], "5")].iloc[1]
    assert cell.endswith("[source ⚠ chance-level]")
    note = SIM.sources_note(SOURCES)
    assert "⚠ Sanity flags: chance-level." in note and "learned nothing from its task" in note


def test_the_frozen_arm_is_never_explained_by_repairing_its_base():
    for source in SIM.TRANSFERRED:
        for verdict in ("better", "worse", "no measurable difference"):
            sentence = SIM.why(source, "random", verdict, "frozen")
            assert "could repair" not in sentence and "gave the target a start" not in sentence, (source, verdict)
    assert SIM.why("in_domain", "random", "worse", "frozen") != SIM.why("in_domain", "random", "worse", "finetune")
    assert "repair within the budget" in SIM.why("in_domain", "random", "worse", "finetune")


# ------------------------------------------------------------------------------------------
# The Summary (defect 6, and 1, 7, 8 there)
# ------------------------------------------------------------------------------------------


def test_summary_names_seeds_and_test_images_per_line(tmp_path):
    nb = NT.NOTEBOOK
    committed = json.loads((RUNS / nb / "summary.json").read_text())
    runs = section1_runs()
    by_n = NT.summarise_gaps(runs, "n_per_class")
    cases = case_runs()
    by_case = NT.summarise_gaps(cases, "case")
    table = chapter_like_table()
    diffs = SIM.differences(table, SOURCES)
    P = SimpleNamespace(**{**committed["parameters"], "out_dir": str(reference_record(tmp_path, accuracy=0.95))})
    s = S.negative_transfer.summarize(P, by_n, by_case, runs, cases, similarity_answer=SIM.answer(diffs, "frozen", SOURCES),
                                      similarity_differences=diffs, similarity_runs=table)  # fmt: skip
    text = s.notebook_markdown()
    header = text.strip().splitlines()[0]
    assert "seed(s)" not in header and "1,000 test images" not in header and "each line names its own seeds" in header
    data = next(ln for ln in text.splitlines() if "**Data size**" in ln) + text.split("**Data size**")[1].split("\n- ")[0]
    assert "3 seeds; 5,400 test images" in data
    assert "whole split: positive" in data and "1,620:" not in data
    assert "These verdicts hold for the budgets the arms had" in data and "test error of 5.0 %" in data
    assert "3 seeds; 1,000 test images" in text.split("**Cases (section 2)**")[1].split("\n")[1]
    assert "`imagenet_aggressive` (" in text and "⚠ not converged (1/3 runs)" in text
    sim = text.split("**Similarity (section 3):**")[1]
    assert "5 seeds against ImageNet, 3 seeds against training from scratch; 2,700 test images" in sim
    # the summary file alone gives the same text (the results page's input)
    again = S.negative_transfer.NegativeTransferSummary.from_json(json.loads(json.dumps(s.to_json())))
    assert again.notebook_markdown() == text


# ------------------------------------------------------------------------------------------
# The learning-curve figure (defect 9)
# ------------------------------------------------------------------------------------------


def test_learning_curves_mark_the_phase_boundary_share_the_y_axis_and_name_the_seed():
    import matplotlib.pyplot as plt

    from eurosat_lib import plots

    gentle = [{"name": "head", "history": {"accuracy": [0.6, 0.7], "val_accuracy": [0.65, 0.7]}},
              {"name": "finetune", "history": {"accuracy": [0.8, 0.85, 0.9], "val_accuracy": [0.75, 0.8, 0.82]}}]
    scratch = [{"name": "scratch", "history": {"accuracy": [0.1, 0.2, 0.3, 0.35, 0.4],
                                               "val_accuracy": [0.1, 0.15, 0.2, 0.25, 0.3]}}]  # fmt: skip
    fig = plots.plot_learning_curves({"imagenet_gentle": gentle, "scratch": scratch}, metrics=("accuracy",), title="Seed 0: accuracy")
    top, bottom = fig.axes[:2]
    lines = [ln for ln in top.get_lines() if list(ln.get_xdata()) == [2.5, 2.5]]
    assert lines and lines[0].get_linestyle() == ":"  # between the head's last epoch (2) and fine-tuning's first (3)
    assert any("fine-tuning starts" in t.get_text() for t in top.texts)
    assert not [ln for ln in bottom.get_lines() if list(ln.get_xdata()) == [2.5, 2.5]]  # one phase: no line
    assert top.get_ylim() == bottom.get_ylim()  # one y axis: "collapses to the scratch curve" can be read
    assert fig._suptitle is not None and "Seed 0" in fig._suptitle.get_text()
    assert "title=f\"Seed {seed}" in _cells()["cell-10"]
    plt.close("all")
