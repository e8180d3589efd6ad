"""The chapters' Summary cells only call, display and narrate: the text each shows comes from its
summary's ``notebook_markdown()``. Rebuilt from the committed records (the chapter's ``summary.json``
tables and numbers, through its ``summarize``), that text is, word for word, what the executed chapter
in the book shows in its Summary cell; and each template's Summary cell is the three calls, no analysis."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from conftest import REPO
from eurosat_lib import summaries as S

RUNS = REPO / "book" / "runs" / "cpu"


def _committed(notebook: str) -> dict:
    return json.loads((RUNS / notebook / S.summary_file(notebook)).read_text())


def _P(notebook: str) -> SimpleNamespace:
    d = _committed(notebook)
    return type("Params", (SimpleNamespace,), {"notebook": notebook})(out_dir=str(RUNS / notebook), **d["parameters"])


def _frame(notebook: str, name: str) -> pd.DataFrame:
    return pd.DataFrame(_committed(notebook)["tables"][name])


def _summary_cell(nb_path: Path) -> dict:
    """The first code cell after the ``## Summary`` heading."""
    cells = json.loads(nb_path.read_text())["cells"]
    start = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "## Summary" in "".join(c["source"]))
    return next(c for c in cells[start + 1:] if c["cell_type"] == "code")


def _shown(notebook: str) -> str:
    """The markdown the executed chapter's Summary cell displays."""
    cell = _summary_cell(REPO / "book" / "chapters" / f"{notebook}.ipynb")
    shown = ["".join(o["data"]["text/markdown"]) for o in cell["outputs"] if "text/markdown" in o.get("data", {})]
    assert len(shown) == 1, f"{notebook}: expected one markdown output in the Summary cell"
    return shown[0]


def _rebuilt(notebook: str):
    """The chapter's summary, rebuilt by its ``summarize`` from the committed tables and records."""
    P = _P(notebook)
    if notebook == "01_transfer_learning":
        from eurosat_lib.experiments import transfer as TL

        return S.transfer.summarize(P, *(_frame(notebook, t) for t in ("compare", "resolution", "preprocessing", "heads")),
                                    models=TL.COMPARE_MODELS)
    if notebook == "03_finetune":
        from eurosat_lib.experiments import crossover as CX

        c = _committed(notebook)
        recipe = json.loads((RUNS / notebook / "recipe" / "record.json").read_text())
        diffs = _frame(notebook, "crossover") if "crossover" in c["tables"] else None
        found = [CX.crossover_size(diffs, arm) for arm in CX.FINETUNED] if diffs is not None else []
        return S.finetune.summarize(P, recipe, *(_frame(notebook, t) for t in ("depth", "learning_rate", "batchnorm")),
                                    runs=[RUNS / notebook / "recipe"], lr_chosen=c["numbers"].get("lr_chosen"),
                                    crossover=diffs, crossovers=found)
    if notebook == "05_backbones":
        return S.backbones.summarize(P, _frame(notebook, "leaderboard").set_index("candidate"), _frame(notebook, "runs"),
                                     _frame(notebook, "final"), _committed(notebook)["numbers"]["chosen"])
    if notebook == "06_truncation":
        choice = {k: v for k, v in _committed(notebook)["numbers"].items() if k != "chosen_cut"}
        per_seed = {t: _frame(notebook, t) for t in ("test_runs", "finetune_runs") if t in _committed(notebook)["tables"]}
        return S.truncation.summarize(P, _frame(notebook, "cuts").set_index("block"), choice,
                                      _frame(notebook, "test").set_index("block"), _frame(notebook, "finetune").set_index("block"),
                                      **per_seed)
    if notebook == "02_negative_transfer":
        c = _committed(notebook)
        sim = {f"similarity_{t}": _frame(notebook, f"similarity_{t}") for t in ("differences", "runs") if f"similarity_{t}" in c["tables"]}
        return S.negative_transfer.summarize(P, *(_frame(notebook, t) for t in ("gap_vs_n", "cases", "gap_runs", "case_runs")),
                                             similarity_answer=c["numbers"].get("similarity_answer"), **sim)  # fmt: skip
    if notebook == "04_overfitting":
        good = RUNS / notebook / "good_model"
        gm = json.loads((good / "record.json").read_text())["metrics"]["test"]
        good_train = json.loads((good / "train_metrics.json").read_text())["metrics"]
        return S.overfitting.summarize(P, gm, _frame(notebook, "gaps").set_index("model"), *(_frame(notebook, t) for t in (
            "fraction_curve", "regularisation", "selection_leak")), _frame(notebook, "test_spread").set_index("scenario"),
            good_model_train=good_train)
    raise NotImplementedError(notebook)


DONE = ["01_transfer_learning", "02_negative_transfer", "03_finetune", "04_overfitting", "05_backbones", "06_truncation"]


@pytest.mark.parametrize("notebook", DONE)
def test_notebook_markdown_is_what_the_executed_chapter_shows(notebook):
    rebuilt = _rebuilt(notebook)
    assert rebuilt.notebook_markdown() == _shown(notebook)
    # the committed summary.json alone gives the same text (the results page's input is enough)
    assert S.load_summary(RUNS / notebook, notebook).notebook_markdown() == _shown(notebook)


@pytest.mark.parametrize("notebook", DONE)
def test_summary_cell_only_calls_displays_and_saves(notebook):
    src = "".join(_summary_cell(REPO / "notebooks" / f"{notebook}.ipynb")["source"])
    lines = [ln for ln in src.splitlines() if ln.strip()]
    module = S.summary_type(notebook).__module__.rsplit(".", 1)[-1]
    assert lines[0].startswith(f"s = summaries.{module}.summarize(P, "), lines[0]
    assert lines[1:] == ["display(Markdown(s.notebook_markdown()))", "X.save_summary(P, s)"]


def test_notebook_markdown_follows_the_numbers():
    """The words are chosen by the numbers: the same learning-rate sweep reads "no measurable
    difference" when every rate matches the chosen one seed by seed, and "worse" when one falls
    5 points below it on every seed."""
    nb = "03_finetune"
    s = S.load_summary(RUNS / nb, nb)
    lrs = _frame(nb, "learning_rate")
    chosen = s.lr_chosen
    assert chosen is not None and chosen in set(lrs["lr_finetune"])
    ref = lrs[lrs["lr_finetune"] == chosen].set_index("seed")["val_accuracy"]
    same = lrs.assign(val_accuracy=lrs["seed"].map(ref))
    line = next(ln for ln in _with_table(s, "learning_rate", same).notebook_markdown().splitlines() if "**Learning rate" in ln)
    from eurosat_lib.summaries.render import group_flags, is_broken

    ctx = S.RecordContext(root=REPO)
    broken = {lr for lr, g in lrs.groupby("lr_finetune") if is_broken(group_flags(g, ctx))}
    sound = [lr for lr in sorted(set(lrs["lr_finetune"])) if lr != chosen and lr not in broken]
    assert sound, "the sweep needs a sound rate besides the chosen one"
    assert "**worse**" not in line and "**better**" not in line and "no measurable difference" in line
    other = sound[0]
    lower = same.assign(val_accuracy=same["val_accuracy"].where(same["lr_finetune"] != other, same["val_accuracy"] - 0.05))
    line = next(ln for ln in _with_table(s, "learning_rate", lower).notebook_markdown().splitlines() if "**Learning rate" in ln)
    assert f"{other:g} -5.0 points" in line and "**worse**" in line


def _with_table(s, name: str, df: pd.DataFrame, **fields):
    import dataclasses

    return dataclasses.replace(s, tables={**s.tables, name: df.to_dict(orient="records")}, **fields)


def test_truncation_text_names_a_cut_only_when_its_interval_is_within_the_tolerance():
    """The committed run: no cut shown within the tolerance, and the intervals wider than it. The other
    branch, built from the committed per-seed tables: a cut shown within (upper bound of its loss), its
    paired test difference, and a fine-tuned cut whose interval is not within the tolerance."""
    nb = "06_truncation"
    s = S.load_summary(RUNS / nb, nb)
    text = s.notebook_markdown()
    full = _frame(nb, "test").set_index("block").loc["top", "test_mean"]
    assert f"no cut is shown to lose at most 1 point(s) against the full backbone, so the answer here is not to cut (test accuracy {full:.2%})" in text
    assert "wider than the tolerance, so no cut could have been shown safe here" in text
    runs = _frame(nb, "test_runs")
    assert len(runs) >= 5 and set(runs["block"]) == {"top"}
    shift = [0.004, 0.005, 0.006, 0.005, 0.005][: len(runs)]
    cut = runs.assign(block="block_16", test_accuracy=runs["test_accuracy"] - pd.Series(shift, index=runs.index))
    ft = _frame(nb, "finetune_runs")
    ft = ft.assign(val_accuracy=ft["val_accuracy"].where(~((ft["block"] == "block_16") & (ft["stage"] == "fine-tuned")), 0.70))
    chosen = _with_table(_with_table(s, "test_runs", pd.concat([cut, runs])), "finetune_runs", ft, chosen="block_16",
                         chosen_cut="block_16", chosen_params_share=0.638, chosen_speedup=1.15, chosen_loss_high=0.008)
    text = chosen.notebook_markdown()
    assert ("the shallowest cut shown to lose at most 1 point(s) against the full backbone is `block_16` (its loss is at most "
            "0.80 points at the upper end of the 95 % interval, paired by seed; 64% of the parameters, 1.15× the speed); on "
            "the test split, against the full backbone: -0.5 points (95 % CI") in text
    assert "The best fine-tuned cut, `top`" not in text and "it is not shown to lose at most 1 point(s)" in text
    assert "`block_16` -1" in text.split("- **Fine-tuning:**")[1]  # fine-tuned 70 % against its own head (~87 %)


def test_truncation_fine_tuning_without_per_seed_runs_states_no_comparison():
    """Means alone carry no interval: without the per-seed fine-tuning table the bullet says so and
    judges nothing (no "within" the tolerance, no gain)."""
    import dataclasses

    nb = "06_truncation"
    s = S.load_summary(RUNS / nb, nb)
    means_only = dataclasses.replace(s, tables={k: v for k, v in s.tables.items() if k != "finetune_runs"})
    bullet = means_only.notebook_markdown().split("- **Fine-tuning:**")[1]
    assert "no per-seed fine-tuning table, so no fine-tuning comparison is stated" in bullet
    assert "within" not in bullet and "points" not in bullet and "%" not in bullet

def test_negative_transfer_text_when_no_case_turned_negative():
    nb = "02_negative_transfer"
    s = S.load_summary(RUNS / nb, nb)
    text = s.notebook_markdown()
    assert "Why the negative cases hurt, in this run's terms:" in text and "`shuffled_source_frozen`: " in text
    assert "Each negative case above broke" not in text  # a fixed claim, true or not, is no longer written
    none = _with_table(s, "cases", _frame(nb, "cases").assign(verdict="positive"))
    text = none.notebook_markdown()
    assert "**Negative transfer (95 % interval of the gap above zero) at 100 images per class:** none." in text
    assert "\nNo case turned negative in this run; the gaps above say how close each came.\n\n- **Similarity (section 3):** " in text
    assert "shuffled_source_frozen`: " not in text  # no explanation for a case that was not negative


def test_a_table_without_a_measured_column_still_renders():
    """A smoke run measures no speed: JSON keeps the column as nulls, which the text leaves out (not nan,
    not a TypeError)."""
    nb = "05_backbones"
    s = S.load_summary(RUNS / nb, nb)
    board = _frame(nb, "leaderboard").assign(images_per_s=None, params_M=None)
    unmeasured = _with_table(s, "leaderboard", board)
    assert unmeasured.frame("leaderboard")["images_per_s"].tolist() == [None] * len(board)
    assert unmeasured.numeric_frame("leaderboard")["images_per_s"].isna().all()
    text = unmeasured.notebook_markdown()  # an unmeasured cost is left out, never printed as nan
    assert "- **Cost of the choice:** " in text and "nan" not in text and "images/s" not in text and "M parameters" not in text
    assert "s to train here" in text  # the training time was measured


def test_finetune_text_names_the_chosen_rate_and_the_crossover_only_when_measured():
    """The executed chapter (a rate chosen on validation, per-seed runs): every comparison paired by
    seed with its interval, and the crossover's line. A summary without per-seed runs or a chosen
    rate compares nothing (means carry no interval); without the crossover study, no crossover line."""
    nb = "03_finetune"
    s = S.load_summary(RUNS / nb, nb)
    text = s.notebook_markdown()
    lrs = _frame(nb, "learning_rate")
    assert text.startswith(f"*Numbers from this run (cpu profile, MobileNetV2 α = 0.35, 128 px; sections 2-4: {lrs['seed'].nunique()} "
                           "seed(s) per setting, paired by seed, 95 % intervals).*")
    from eurosat_lib.summaries.render import mean_sd

    lr = s.lr_chosen
    mean = lrs.groupby("lr_finetune")["val_accuracy"].mean()[lr]
    assert f"{lr:g} chosen on validation ({mean_sd(lrs.loc[lrs['lr_finetune'] == lr, 'val_accuracy'])})" in text
    assert f"{mean:.2%}" not in text  # the means come with their sd, the comparisons with their interval
    assert "- **Depth (at" in text and "- **BatchNorm (batches of 16):** updating against frozen" in text and "95 % CI" in text
    assert "- **Crossover (section 5):** on the test split, paired by seed with a 95 % interval" in text
    assert f"fine-tuning the top blocks beats the frozen base + head {s.crossover_top};" in text
    means_only = _with_table(s, "depth", _frame(nb, "depth").drop(columns="run"))
    old = means_only.notebook_markdown()
    assert "so no setting is compared here" in old and "chosen on validation (" not in old and "95 % CI" not in old
    for word in ("best", "worst", "better", "worse"):
        assert word not in old.split("- **Crossover")[0]
    import dataclasses

    alone = dataclasses.replace(s, crossover_top=None, crossover_all=None)
    assert "Crossover" not in alone.notebook_markdown() and alone.notebook_markdown() in text


def test_negative_transfer_similarity_line_only_when_the_study_ran():
    """Chapter 2's section 3 adds its answer as the Summary's last line; without it the text is the executed chapter's."""
    nb = "02_negative_transfer"
    args = [_frame(nb, t) for t in ("gap_vs_n", "cases", "gap_runs", "case_runs")]
    without = S.negative_transfer.summarize(_P(nb), *args)
    assert without.similarity_answer is None and "Similarity" not in without.notebook_markdown()
    diffs = pd.DataFrame([{"arm": "frozen", "source": "in_domain", "diff": 0.05}])
    with_sim = S.negative_transfer.summarize(_P(nb), *args, similarity_answer="Yes: the closer source helped.",
                                             similarity_differences=diffs)
    text = with_sim.notebook_markdown()
    assert text == without.notebook_markdown() + "\n\n- **Similarity (section 3):** Yes: the closer source helped."
    assert with_sim.frame("similarity_differences")["source"].tolist() == ["in_domain"]
    assert "similarity_runs" not in with_sim.tables


def test_chapter_1_summary_states_each_answer_with_its_interval():
    """Chapter 1's next Summary cell (pending template), built from the committed records."""
    nb = "01_transfer_learning"
    s = S.load_summary(RUNS / nb, nb)
    text = s.notebook_markdown(S.RecordContext(root=REPO))
    for bullet in ("**Reuse vs scratch**", "**Resolution**", "**Preprocessing:**", "**Head depth:**"):
        assert bullet in text
    assert text.count("95 % CI") >= 4 and "against the next best" in text
    assert "512-256" in text and ("underfits" in text or "overfits" in text or "measurable difference" in text)
