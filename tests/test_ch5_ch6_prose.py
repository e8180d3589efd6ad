"""Chapters 5 and 6: what the pages say is chosen by the runs' numbers and histories.

Each test builds small synthetic tables and run records (or reads the committed ones where the
claim is about them) and checks the words a reviewer found missing or wrong: why no cut of chapter 6
can pass its rule, a flagged or budget-bound fine-tune shown as such, chapter 5's early-stopped runs
named with a labelled sensitivity check, the confounds of "pretrained vs from scratch", the setting
and rule lines of the results page, and figures that draw what their labels say.
"""

from __future__ import annotations

import json
import math

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from eurosat_lib import plots
from eurosat_lib.summaries import RecordContext
from eurosat_lib.summaries import backbones as SB
from eurosat_lib.summaries import truncation as ST

BOOK = REPO / "book"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------------------------
# Chapter 6: why no cut passes, what would, and the seeds' spread alone
# --------------------------------------------------------------------------------------------


def _sweep(means: dict[str, list[float]], n: int) -> pd.DataFrame:
    rows = [{"block": b, "depth": d, "feature_dim": 8, "backbone_params": 1000 * d, "seed": s, "val_accuracy": v, "val_images": n}
            for d, (b, accs) in enumerate(means.items(), start=1) for s, v in enumerate(accs)]  # fmt: skip
    return pd.DataFrame(rows)


# five seeds that agree closely: the seeds alone would put b2's loss well inside one point
CLOSE = {"b1": [0.80, 0.81, 0.80, 0.81, 0.80], "b2": [0.872, 0.871, 0.874, 0.870, 0.873],
         "top": [0.877, 0.878, 0.879, 0.878, 0.877]}  # fmt: skip


def test_cut_table_keeps_the_two_parts_of_each_interval():
    from eurosat_lib.experiments import truncation as TR
    from eurosat_lib.stats import paired_diff

    table = TR.cut_table(_sweep(CLOSE, 5400))
    a, b = np.array(CLOSE["top"]), np.array(CLOSE["b2"])
    want = 1.959963984540054 * math.sqrt(a.mean() * (1 - a.mean()) / 5400 + b.mean() * (1 - b.mean()) / 5400)
    assert table.loc["b2", "eval_half"] == pytest.approx(want)
    assert table.loc["b2", "loss_high_seeds"] == pytest.approx(paired_diff(a, b).high)
    assert table.loc["b2", "loss_high_seeds"] < 0.01 < table.loc["b2", "loss_high"]  # the images' term decides
    assert table.loc["top", "eval_half"] == 0 and (table["val_images"] == 5400).all()
    choice = TR.choose_cut(table, 0.01)
    assert choice["chosen"] == "top" and choice["eval_half"] == pytest.approx(table.loc[["b1", "b2"], "eval_half"].min())
    assert choice["val_images"] == 5400


def test_choice_paragraph_says_why_no_cut_passes_and_what_would():
    """The images' term alone is wider than the tolerance: more seeds cannot help, the whole split is
    scored, a paired test on per-image predictions could; the seeds' spread is stated, not used."""
    from eurosat_lib.experiments import truncation as TR

    table = TR.cut_table(_sweep(CLOSE, 5400))
    choice = TR.choose_cut(table, 0.01)
    text = ST.choice_paragraph(table, choice)
    half = 100 * choice["eval_half"]
    assert f"that term alone is ±{half:.2f} points" in text and "on 5,400 images" in text
    assert "however many seeds ran" in text and "the whole validation split is already scored" in text
    assert "per-image predictions" in text and "paired test on the same images" in text
    assert f"at most {100 * table.loc['b2', 'loss_high_seeds']:.2f} at the upper end" in text and "does not show the cut safe" in text
    # the old sentences: more seeds or images as the remedy, and a verdict on cutting
    assert "without more seeds or images" not in text and "On this evidence, keep the whole backbone" not in text
    assert "not a finding that every cut loses more than the tolerance" in text
    # a subset of the validation split: more images would narrow it
    assert "scoring more validation images would narrow it" in ST.choice_paragraph(table, choice, whole_split=False)
    # 200,000 images: the images' term is small, the seeds' spread makes the intervals wide
    wide = {b: [v + (0.01 if i % 2 else -0.01) * (b != "top") for i, v in enumerate(accs)] for b, accs in CLOSE.items()}
    t2 = TR.cut_table(_sweep(wide, 200_000))
    c2 = TR.choose_cut(t2, 0.01)
    assert c2["eval_half"] < 0.01 < c2["noise"]
    text = ST.choice_paragraph(t2, c2)
    assert "mainly through the seeds' spread: more seeds would narrow them" in text and "per-image" not in text


def test_expectation_sentence_follows_the_numbers():
    from eurosat_lib.experiments import truncation as TR

    table = TR.cut_table(_sweep(CLOSE, 5400))
    assert "did not hold for a linear probe" in ST.expectation_text(table)
    above = TR.cut_table(_sweep({**CLOSE, "b2": [0.95, 0.951, 0.949, 0.95, 0.952]}, 5400))
    assert "held for a linear probe: cut after `b2`" in ST.expectation_text(above)
    near = TR.cut_table(_sweep({**CLOSE, "b2": [0.879, 0.877, 0.880, 0.878, 0.879]}, 5400))
    assert "do not decide" in ST.expectation_text(near) and "`b2`" in ST.expectation_text(near)


# --------------------------------------------------------------------------------------------
# Chapter 6: a flagged fine-tune shows its flag; a binding budget is said
# --------------------------------------------------------------------------------------------


def _ft_record(folder, val, *, cap=8, warnings=(), watched=50):
    folder.mkdir(parents=True)
    rec = {"status": "complete", "warnings": list(warnings), "model_info": {"num_classes": 10},
           "params": {"phases": [{"name": "head", "epochs": 15},
                                 {"name": "finetune", "epochs": cap, "val_n_per_class": watched}]},
           "history": [{"name": "head", "history": {"val_accuracy": [0.87] * 15}},
                       {"name": "finetune", "history": {"val_accuracy": list(val)}}],
           "metrics": {"val": {"accuracy": val[-1], "n": 5400}}}  # fmt: skip
    (folder / "record.json").write_text(json.dumps(rec))
    return str(folder)


def _ft_table(tmp_path, flagged_seed0=True):
    rows = []
    for block, gain in (("b2", 0.02), ("top", 0.015)):
        for seed in range(3):
            val = [0.80, 0.84, 0.86, 0.87, 0.88, 0.885, 0.89, 0.895 + 0.001 * seed]  # best at the last epoch
            flags = ["not converged"] if (block == "b2" and seed == 0 and flagged_seed0) else []
            run = _ft_record(tmp_path / f"{block}_{seed}", val, warnings=flags)
            for stage, v in (("frozen + head", 0.87 + 0.001 * seed), ("fine-tuned", 0.87 + 0.001 * seed + gain)):
                rows.append({"block": block, "seed": seed, "stage": stage, "val_accuracy": v, "val_images": 5400, "run": run})
    return pd.DataFrame(rows)


def test_finetune_paragraph_shows_the_flag_and_the_binding_budget(tmp_path):
    ft = _ft_table(tmp_path)
    text = ST.finetune_paragraph(ft, ctx=RecordContext(root=tmp_path))
    assert "at `b2` ⚠ not converged (1/3 runs) fine-tuning" in text and "at `top` fine-tuning" in text
    assert "Every fine-tune ran its whole cap of 8 epochs (early stopping ended none of the 6)" in text
    assert "the best epoch on the 500 watched validation images was epoch 8" in text
    assert "the budget was binding, so these gains are lower bounds" in text
    assert ST.finetune_flags(ft, RecordContext(root=tmp_path)) == {"b2": "⚠ not converged (1/3 runs)", "top": ""}
    # fine-tunes that stopped early, at a best epoch well before the cap: no "binding"
    early = _ft_record(tmp_path / "early", [0.80, 0.89, 0.88, 0.87, 0.86], cap=8)
    budget = ST.finetune_budget(pd.DataFrame({"run": [early]}), RecordContext(root=tmp_path))
    assert budget == [{"run": early, "ran": 5, "cap": 8, "best": 2, "watched": 500}]
    words = ST.budget_text(budget)
    assert words.startswith("0 of 1 fine-tunes ran their whole cap of 8 epochs") and "binding" not in words


def test_results_page_section_states_the_rule_and_the_finetunes(tmp_path):
    """The chapter-6 section: the non-inferiority rule in words (not "within the tolerance" on the mean),
    no cut shown safe, and the fine-tuning rows with their flags and the budget."""
    ft = _ft_table(tmp_path)
    summ = ST.TruncationSummary(
        parameters={"tolerance": 0.01, "epochs_finetune": 8, "val_n_per_class": None, "seeds": [0, 1, 2, 3, 4]},
        tables={"cuts": [{"block": "b2", "val_mean": 0.872, "drop": 0.006, "loss_high": 0.019, "loss_high_seeds": 0.008,
                          "eval_half": 0.0125, "val_images": 5400.0, "params_share": 0.5, "speedup": 1.0},
                         {"block": "top", "val_mean": 0.878, "drop": 0.0, "loss_high": 0.0, "loss_high_seeds": 0.0,
                          "eval_half": 0.0, "val_images": 5400.0, "params_share": 1.0, "speedup": 1.0}],
                "finetune_runs": ft.to_dict(orient="records")},
        chosen_cut="top", full="top", chosen="top", tolerance=0.01, rule="95 % upper bound", noise=0.013,
        eval_half=0.0125, val_images=5400.0)  # fmt: skip
    text = summ.render_markdown("`src`", RecordContext(root=tmp_path))
    assert "Shallowest cut within" not in text
    assert "The rule: the shallowest cut whose loss against the full backbone is at most 1.0 points at the upper end of its 95 % interval" in text
    assert "No cut is shown safe by it, so it keeps the full backbone (`top`)" in text and "±1.25 points" in text
    assert "| `b2` | 87.1 % | 89.1 % ⚠ not converged (1/3 runs) | +2.0 points (95 % CI" in text
    assert "The best fine-tuned cut, `b2` ⚠ not converged (1/3 runs), against the fine-tuned full backbone" in text
    assert "the budget was binding" in text


def test_committed_truncation_summary_says_why_and_shows_the_flag():
    """The executed chapter's Summary (from the committed summary.json and records)."""
    from eurosat_lib import summaries as S

    s = S.load_summary(BOOK / "runs" / "cpu" / "06_truncation", "06_truncation")
    text = s.notebook_markdown()
    assert "did not hold for a linear probe" in text or "held for a linear probe" in text or "do not decide" in text
    flagged = [r for r in s.frame("finetune_runs").query("stage == 'fine-tuned'")["run"].unique()
               if "not converged" in json.loads((REPO / r / "record.json").read_text())["warnings"]]  # fmt: skip
    if flagged:
        assert "⚠ not converged" in text.split("- **Fine-tuning:**")[1]
    if s.chosen_cut == s.full and s.eval_half is not None and s.eval_half > s.tolerance:
        assert "so more seeds cannot narrow it" in text and "per-image predictions" in text
    assert "nan×" not in text


# --------------------------------------------------------------------------------------------
# Chapter 5: early-stopped runs named, a labelled sensitivity check, budgets from the histories
# --------------------------------------------------------------------------------------------


def _bb_record(folder, *, head_last=0.866, ft_val=(0.86, 0.87, 0.88, 0.89, 0.90, 0.90, 0.90, 0.90, 0.90, 0.90, 0.905, 0.91),
               ft_loss=None, final=0.89, head_val=None):
    folder.mkdir(parents=True)
    hv = head_val or [0.80 + 0.002 * i for i in range(29)] + [head_last]
    rec = {"status": "complete", "warnings": [], "model_info": {"num_classes": 10}, "extra": {"train_size": 500},
           "params": {"image_size": 128, "phases": [
               {"name": "head", "epochs": 30, "early_stopping": 5},
               {"name": "finetune", "epochs": 12, "early_stopping": 3, "early_stopping_monitor": "val_accuracy",
                "val_n_per_class": 30}]},
           "history": [{"name": "head", "history": {"val_accuracy": hv}},
                       {"name": "finetune", "history": {"val_accuracy": list(ft_val),
                                                        "val_loss": list(ft_loss or [1.0 - 0.05 * i for i in range(len(ft_val))])}}],
           "metrics": {"val": {"accuracy": final, "n": 5400}, "test": {"accuracy": final, "n": 500}}}  # fmt: skip
    (folder / "record.json").write_text(json.dumps(rec))
    return str(folder)


def _bb_runs(tmp_path):
    """Two pretrained candidates, five seeds; A's seed 3 fine-tune stopped at 6 of 12 below its head."""
    rows = []
    for cand, base in (("A", 0.885), ("B", 0.870)):
        for seed in range(5):
            kw = {"final": base + 0.001 * seed}
            if cand == "A" and seed == 3:
                kw = {"ft_val": (0.75, 0.74, 0.85, 0.817, 0.82, 0.843), "final": 0.849}
            run = _bb_record(tmp_path / f"{cand.lower()}_imagenet_128px_seed{seed}", **kw)
            rows.append({"candidate": cand, "backbone": cand, "init": "ImageNet", "image_size": 128, "seed": seed,
                         "val_accuracy": kw["final"], "val_macro_f1": kw["final"], "test_accuracy": kw["final"],
                         "test_macro_f1": kw["final"], "total_params": 1e6, "inference_images_per_s": 100.0,
                         "fit_seconds": 60.0, "run": run})  # fmt: skip
    return pd.DataFrame(rows)


def test_an_early_stopped_run_below_its_head_is_named_with_why_and_a_sensitivity_check(tmp_path):
    from eurosat_lib.experiments import backbones as BB

    ctx = RecordContext(root=tmp_path)
    runs = _bb_runs(tmp_path)
    (o,) = SB.stopped_below_head(runs, ctx)
    assert (o["name"], o["ran"], o["cap"], o["best"], o["watched"]) == ("a_imagenet_128px_seed3", 6, 12, 3, 300)
    assert o["final_val"] == 0.849 and o["head_val"] == 0.866 and o["loss_still_falling"]
    budget = SB.budget_paragraph(runs, ctx)
    assert "all 10 pretrained runs used the whole 30 epochs" in budget
    assert "9 of 10 ran the whole 12-epoch cap" in budget and "early stopping ended 1 sooner (after 6 epochs)" in budget
    assert ("`a_imagenet_128px_seed3` (A, seed 3): early stopping (patience 3 on the 300 watched validation images) ended "
            "its fine-tune after 6 of at most 12 epochs and kept epoch 3's weights (85.0 % on those images") in budget
    assert "below the 86.6 % its own head phase had reached" in budget and "within the watched subset's noise" in budget
    board = BB.summarise(runs)
    text = SB.leaderboard_paragraph(runs, board, ctx=ctx)
    assert "These comparisons keep `a_imagenet_128px_seed3`" in text
    assert "as a sensitivity check only, without seed 3, **B** against **A**:" in text
    final = pd.DataFrame({"seed": range(5), "test_accuracy": [0.90, 0.90, 0.89, 0.843, 0.905], "test_macro_f1": 0.9, "test_n": 5400})
    test = SB.test_paragraph(runs, "A", final, ctx=ctx)
    assert "seed 3 (`a_imagenet_128px_seed3`) scores 84.30 %, against 89.00 % to 90.50 % for the other seeds" in test
    assert "Without it, as a sensitivity check only: 89.9 ± 0.6 % over 4 seeds." in test
    # without such a run the page says nothing of the kind
    clean = runs[~((runs["candidate"] == "A") & (runs["seed"] == 3))]
    assert SB.stopped_below_head(clean, ctx) == [] and "sensitivity" not in SB.leaderboard_paragraph(clean, BB.summarise(clean), ctx=ctx)


def test_budget_paragraph_states_a_head_phase_still_rising_at_its_cap(tmp_path):
    ctx = RecordContext(root=tmp_path)
    rising = [0.70 + 0.002 * i for i in range(25)] + [0.731, 0.74, 0.744, 0.749, 0.753]
    rows = [{"candidate": "M", "seed": 0, "run": _bb_record(tmp_path / "m0", head_val=rising)},
            {"candidate": "N", "seed": 0, "run": _bb_record(tmp_path / "n0")}]  # fmt: skip
    text = SB.budget_paragraph(pd.DataFrame(rows), ctx)
    assert "all 2 pretrained runs used the whole 30 epochs (best validation accuracy at epoch 30)" in text
    assert "still rose by up to 2.2 points for **M** (seed 0: 73.1 % → 75.3 %)" in text and "at most 1.6 for the others" in text


def test_pretrained_against_scratch_names_what_else_differs():
    board = pd.DataFrame({"init": ["ImageNet", "from scratch"], "image_size": [128, 64]}, index=["P · ImageNet · 128px", "S · from scratch · 64px"])
    runs = pd.DataFrame({"candidate": list(board.index), "backbone": ["MobileNetV2-0.5", "EfficientNetB0"]})
    text = SB.confounds(board, runs, board.index[1], board.index[0])
    assert "the architecture (EfficientNetB0 vs MobileNetV2-0.5)" in text and "the input size (64 vs 128 px" in text
    assert "the recipe" in text and "not the value of pretraining alone" in text
    same = pd.DataFrame({"init": ["ImageNet", "ImageNet"], "image_size": [128, 128]}, index=list(board.index))
    assert SB.confounds(same, runs.assign(backbone="X"), board.index[1], board.index[0]) == ""


def test_results_page_chapter_5_states_its_setting_and_what_the_mean_is():
    page = (BOOK / "results.md").read_text()
    section = page[page.index("## Choosing a backbone"):page.index("## Truncating the backbone")]
    params = json.loads((BOOK / "runs" / "cpu" / "05_backbones" / "summary.json").read_text())["parameters"]
    setting = next(line for line in section.splitlines() if line.startswith("Setting:"))
    assert f"{params['n_per_class']} training images per class" in setting and f"{len(params['seeds'])} seeds" in setting
    assert f"fine-tuning capped at {params['epochs_finetune']} epochs" in setting
    final = json.loads((BOOK / "runs" / "cpu" / "05_backbones" / "summary.json").read_text())["tables"]["final"]
    assert f"test images (the mean of {len(final)} seeds, sd " in section


def test_results_page_chapter_6_states_the_rule_not_the_mean():
    page = (BOOK / "results.md").read_text()
    section = page[page.index("## Truncating the backbone"):]
    assert "Shallowest cut within the chapter's tolerance" not in section
    assert "at the upper end of its 95 % interval" in section and "fine-tuned vs its own head (paired by seed)" in section


# --------------------------------------------------------------------------------------------
# Chapter 6's Keras lines name the input size they build at
# --------------------------------------------------------------------------------------------


def test_keras_recipe_cell_labels_its_input_size():
    cells = json.loads((REPO / "notebooks" / "06_truncation.ipynb").read_text())["cells"]
    recipe = next("".join(c["source"]) for c in cells if "keras-recipe" in c.get("metadata", {}).get("tags", []))
    assert "px input: feature map" in recipe and "base.input.shape[1]" in recipe
    prose = "".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    assert "builds the network at 64 px" in prose and "`image_size`" in prose


# --------------------------------------------------------------------------------------------
# Figures: what the labels say is what is drawn, and nothing runs into anything
# --------------------------------------------------------------------------------------------


def _tick_texts(ax, which="major"):
    ax.figure.canvas.draw()
    ticks = ax.xaxis.get_majorticklabels() if which == "major" else ax.xaxis.get_minorticklabels()
    lo, hi = ax.get_xlim()
    return [t.get_text() for t in ticks if t.get_text() and lo <= t.get_position()[0] <= hi]


def test_accuracy_vs_cost_labels_clear_points_and_log_ticks_plain():
    """Chapter 5's two panels: plain tick numbers, no minor-tick labels, no label on a point or another label."""
    df = pd.DataFrame({"backbone": ["MobileNetV2-0.5", "MobileNetV2-0.35", "MobileNet-0.25", "EfficientNetB0"],
                       "init": ["ImageNet", "ImageNet", "ImageNet", "from scratch"],
                       "total_params": [719_034, 423_018, 221_114, 4_062_381], "speed": [253.0, 302.0, 621.0, 275.0],
                       "val_accuracy": [0.882, 0.877, 0.853, 0.595]})  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), layout="constrained")
    plots.plot_accuracy_vs_cost(df, x="speed", y="val_accuracy", label="backbone", hue="init", ax=axes[0])
    plots.plot_accuracy_vs_cost(df, x="total_params", y="val_accuracy", label="backbone", hue="init", ax=axes[1])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in axes:
        assert _tick_texts(ax, "minor") == []
        assert all("10^" not in t and "×" not in t and "$" not in t for t in _tick_texts(ax)), _tick_texts(ax)
        labels = [t for t in ax.texts if t.get_text()]
        boxes = [t.get_window_extent(renderer) for t in labels]
        assert len(boxes) == 4
        assert not [(i, j) for i in range(4) for j in range(i + 1, 4) if boxes[i].overlaps(boxes[j])]
        pts = ax.transData.transform(np.column_stack([df["speed" if ax is axes[0] else "total_params"], df["val_accuracy"]]))
        on_point = [t.get_text() for t, bb in zip(labels, boxes) for x, y in pts if bb.contains(x, y)]
        assert not on_point, on_point
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(bb.overlaps(legend) for bb in boxes)
    assert _tick_texts(axes[1]) == ["200k", "500k", "1M", "2M"]


def test_leaderboard_bars_start_at_zero_and_the_axis_ends_at_one():
    df = pd.DataFrame({"candidate": ["a", "a", "b", "b"], "val_accuracy": [0.88, 0.90, 0.59, 0.60],
                       "total_params": 1e6, "fit_seconds": 60.0})  # fmt: skip
    fig = plots.plot_leaderboard(df, metric="val_accuracy", label="candidate", params="total_params", speed="fit_seconds")
    ax = fig.axes[0]
    assert ax.get_xlim() == (0.0, 1.0)
    assert "sd over seeds" in ax.get_title()
    assert all(t.get_position()[0] > 1 for t in ax.texts)  # the notes stand right of the axes, not on the accuracy axis


def test_cut_tradeoff_draws_the_rules_interval_and_keeps_the_legend_off_the_points():
    from eurosat_lib.experiments import truncation as TR

    table = TR.cut_table(_sweep(CLOSE, 5400), pd.DataFrame({"block": ["b1", "b2", "top"], "images_per_s": [900.0, 320.0, 316.0]}))
    fig = plots.plot_cut_tradeoff(table, tolerance=0.01, chosen="top")
    axes = [a for a in fig.axes]
    assert len(axes) == 2 and fig.legends and all(a.get_legend() is None for a in axes)
    assert all("95 % interval" in a.get_ylabel() for a in axes)
    # the bars are the loss's interval around each mean: b2's reaches loss_high below the full backbone
    bars = [c for c in axes[0].containers if hasattr(c, "lines") and c.lines[2]]
    segs = bars[0].lines[2][0].get_segments()
    low_b2 = min(p[1] for p in segs[1])
    assert low_b2 == pytest.approx(table.loc["top", "val_mean"] - table.loc["b2", "loss_high"])
    # without the interval columns: ± sd, and the label says so
    plain = plots.plot_cut_tradeoff(table.drop(columns=["loss_high"]), tolerance=0.01)
    assert "sd over seeds" in plain.axes[0].get_ylabel()


def test_speedups_carry_their_range_within_one_timing_round():
    from eurosat_lib.summaries.truncation import speedup_text

    row = {"speedup": 1.2, "speedup_low": 1.05, "speedup_high": 1.31}
    assert speedup_text(row) == "1.20× (1.05–1.31)" and speedup_text(row, ranged=False) == "1.20×"
    assert speedup_text({"speedup": 1.2}) == "1.20×" and speedup_text({"speedup": float("nan")}) == "–"
    # the committed chapter: every cut's cell has its range, the reference none, the header says what the range is
    d = json.loads((REPO / "book" / "runs" / "cpu" / "06_truncation" / "summary.json").read_text())
    from eurosat_lib.summaries import load_summary

    section = load_summary(REPO / "book" / "runs" / "cpu" / "06_truncation", "06_truncation").render_markdown("src")
    rounds = {r.get("speed_rounds") for r in d["tables"]["cuts"]}
    assert rounds == {5.0}, "chapter 6 was executed with the per-round timing"
    assert "inference speed-up (lowest–highest within one of 5 timing rounds)" in section
    for r in d["tables"]["cuts"]:
        line = next(ln for ln in section.splitlines() if ln.startswith(f"| `{r['block']}` |"))
        if r["block"] == "top":
            assert line.endswith("| 1.00× |")
        else:
            assert line.endswith(f"| {r['speedup']:.2f}× ({r['speedup_low']:.2f}–{r['speedup_high']:.2f}) |")
            assert r["speedup_low"] <= r["speedup_high"]


def test_templates_show_the_budgets_the_expectation_and_points_not_cut_bars():
    def code(nb):
        cells = json.loads((REPO / "notebooks" / f"{nb}.ipynb").read_text())["cells"]
        assert all(not c.get("outputs") for c in cells if c["cell_type"] == "code"), f"{nb}: a template keeps no outputs"
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")

    ch5, ch6 = code("05_backbones"), code("06_truncation")
    assert "summaries.backbones.budget_paragraph(runs_df)" in ch5 and "tight_layout" not in ch5
    assert "summaries.truncation.expectation_text(table)" in ch6
    assert "whole_split=P.val_n_per_class is None" in ch6 and "summaries.truncation.finetune_flags(ft)" in ch6
    # the fine-tune figure: points, no y axis cut off under bars
    assert 'hue="stage", kind="point"' in ch6 and "set_ylim" not in ch6
