"""Chapter 3's prose (summaries/finetune.py, the crossover study's text): every number a flagged run
enters carries its ⚠, the words follow the intervals, and what limits a finding (its budget, its
seeds, its setup) is read from the run records and said. Built on small records written here, so
each check knows its answer and can fail; no network is trained."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO
from eurosat_lib.experiments import crossover as CX
from eurosat_lib.experiments import finetune as FT
from eurosat_lib.experiments import resolve_params
from eurosat_lib.summaries import RecordContext
from eurosat_lib.summaries import finetune as F
from eurosat_lib.summaries.finetune import FinetuneSummary


BN_FROZEN, BN_UPDATING = "frozen (inference mode)", "updating (training mode)"  # batchnorm_pitfall's row labels


def record(folder: Path, *, image_size=128, train=500, batch=64, epochs=3, epochs_run=None, lr=1e-5, schedule="constant",
           unfreeze="all", early_stopping=None, curve=(0.80, 0.81, 0.82), val=0.85, test=None, warnings=(),
           budget=None, fit_seconds=50.0, head_only=False, phase="finetune") -> str:  # fmt: skip
    """A finished run's record with the fields the prose reads; returns its folder."""
    folder.mkdir(parents=True, exist_ok=True)
    head = {"name": "head", "epochs": 30, "learning_rate": 1e-3, "batch_size": 128, "schedule": "constant",
            "early_stopping": 5, "unfreeze": None, "freeze_bn": True}  # fmt: skip
    tune = {"name": phase, "epochs": epochs, "learning_rate": lr, "batch_size": batch, "optimizer": "adam",
            "schedule": schedule, "early_stopping": early_stopping, "unfreeze": unfreeze, "freeze_bn": True,
            "val_n_per_class": 30}  # fmt: skip
    phases = [head] if head_only else ([tune] if phase == "scratch" else [head, tune])
    hist = [{"name": "head", "history": {"val_accuracy": [0.7, 0.8]}}] if phase != "scratch" else []
    if not head_only:
        hist.append({"name": phase, "history": {"val_accuracy": list(curve)}})
    tags = {"budget": budget} if budget else {}
    metrics = {"val": {"accuracy": val, "n": 5400, "macro_f1": val}}
    if test is not None:
        metrics["test"] = {"accuracy": test, "n": 5400, "macro_f1": test}
    rec = {"status": "complete", "warnings": list(warnings),
           "params": {"backbone": "MobileNetV2", "backbone_kwargs": {"alpha": 0.35}, "image_size": image_size,
                      "phases": phases, "tags": tags},
           "metrics": metrics, "history": hist, "extra": {"train_size": train},
           "timings": {"fit_seconds": fit_seconds,
                       "phases": {phase: {"epochs_run": epochs_run or len(curve), "seconds_per_epoch": 7.0}}},
           "model_info": {"num_classes": 10}}  # fmt: skip
    (folder / "record.json").write_text(json.dumps(rec))
    return str(folder)


# ------------------------------------------------------------------------------------------
# Defect 1: a flagged run's ⚠ beside every number it enters (Summary and section 1)
# ------------------------------------------------------------------------------------------


@pytest.fixture
def chapter(tmp_path):
    """A chapter whose recipe, one 1e-4 run and one frozen-BatchNorm run are flagged not converged."""
    ch = tmp_path / "03_finetune"
    record(ch / "recipe", lr=3e-4, curve=(0.763, 0.813, 0.883), val=0.8567, test=0.8556, warnings=["not converged"])
    lrs, depth, bn = [], [], []
    for seed in range(3):
        for lr, acc in ((1e-5, 0.868), (1e-4, 0.861), (1e-2, 0.10)):
            flags = ["not converged"] if (lr == 1e-4 and seed == 0) else ["chance-level", "diverged"] if lr == 1e-2 else []
            lrs.append({"lr_finetune": lr, "seed": seed, "val_accuracy": acc + 0.002 * seed, "val_after_head": 0.862,
                        "run": record(ch / f"lr{lr:g}_s{seed}", lr=lr, warnings=flags)})  # fmt: skip
        for f, acc in ((0.0, 0.865), (1.0, 0.870)):
            depth.append({"unfreeze_fraction": f, "seed": seed, "val_accuracy": acc + 0.001 * (-1) ** seed,
                          "run": record(ch / f"d{f:g}_s{seed}")})  # fmt: skip
        for mode, acc in ((BN_FROZEN, (0.78, 0.85, 0.82)[seed]), (BN_UPDATING, (0.74, 0.66, 0.74)[seed])):
            flags = ["not converged"] if (mode == BN_FROZEN and seed == 1) else []
            bn.append({"batchnorm": mode, "seed": seed, "val_accuracy": acc, "val_after_head": 0.862 + 0.001 * seed,
                       "run": record(ch / f"bn{mode[:3]}_s{seed}", lr=3e-4, batch=16, warnings=flags, fit_seconds=49.0)})  # fmt: skip
    for seed in range(3):
        record(ch / "crossover" / f"finetune_all_all_seed{seed}", image_size=64)
    s = FinetuneSummary(profile="cpu", parameters={"backbone": "MobileNetV2", "alpha": 0.35, "image_size": 128,
                                                   "seeds": [0, 1, 2], "unfreeze_fraction": 0.5, "small_batch": 16},
                        tables={"depth": depth, "learning_rate": lrs, "batchnorm": bn}, lr_chosen=1e-5,
                        val_after_head=0.8617, val_after_finetune=0.8567, recipe_test_accuracy=0.8556,
                        crossover_top="at 5 labelled images per class", crossover_all="at every size measured")  # fmt: skip
    return s, RecordContext(root=tmp_path), ch


def test_summary_shows_the_flag_of_every_flagged_run_beside_its_numbers(chapter):
    s, ctx, _ = chapter
    text = s.notebook_markdown(ctx)
    recipe = next(ln for ln in text.splitlines() if ln.startswith("- **Recipe"))
    assert "85.67% ⚠ not converged" in recipe and "**85.56%** ⚠ not converged" in recipe
    assert "76.3 % → 81.3 % → 88.3 % on 300 images" in recipe  # why, from the run's own curve
    lr = next(ln for ln in text.splitlines() if ln.startswith("- **Learning rate"))
    assert re.search(r"0\.0001 [^;]*\(at 86\.\d ± \d\.\d % ⚠ not converged \(1/3 runs\)\)", lr)
    assert "0.01 collapsed" in lr and "10." not in lr
    bn = next(ln for ln in text.splitlines() if ln.startswith("- **BatchNorm"))
    assert re.search(r"frozen 81\.\d ± \d\.\d % ⚠ not converged \(1/3 runs\)", bn)


def test_section_one_text_flags_the_recipe_and_says_why(chapter):
    _, _, ch = chapter
    rec = json.loads((ch / "recipe" / "record.json").read_text())
    text = F.recipe_markdown(rec, 3)
    assert "**85.56%** ⚠ not converged accuracy" in text and "to 85.67% ⚠ not converged after fine-tuning" in text
    assert "still rising when its fine-tuning phase ended (76.3 % → 81.3 % → 88.3 % on 300 images)" in text
    assert "3 epochs × 8 steps = 24 updates on 500 images (batches of 64)" in text
    assert F.still_improving({**rec, "warnings": []}) == ""  # an unflagged run gets no such sentence
    clean = F.recipe_markdown({**rec, "warnings": []}, 3)
    assert "⚠" not in clean.split("(95 % CI")[0]


def test_the_chapters_tables_show_the_flags_of_their_runs(chapter):
    s, ctx, _ = chapter
    t = F.group_table(s.numeric_frame("batchnorm"), "batchnorm", ctx)
    assert t.loc[BN_FROZEN, "validation accuracy (mean ± sd)"].endswith("% ⚠ not converged (1/3 runs)")
    assert "⚠" not in t.loc[BN_UPDATING, "validation accuracy (mean ± sd)"] and t.loc[BN_UPDATING, "seeds"] == 3
    text = template_text()
    assert 'summaries.finetune.group_table(bn, "batchnorm")' in text and '"sanity flags": ["", ft_flags]' in text
    assert 'bn.groupby("batchnorm")["val_accuracy"].agg(["mean", "std", "count"])' not in text


# ------------------------------------------------------------------------------------------
# Defect 4: the learning-rate choice and the depth null are said to hold for their budget
# ------------------------------------------------------------------------------------------


def test_learning_rate_choice_is_stated_for_its_budget(chapter):
    s, ctx, _ = chapter
    text = F.lr_markdown(s.numeric_frame("learning_rate"), 1e-5, ctx)
    assert ("Every rate had the same small budget, 3 epochs × 8 steps = 24 updates on 500 images (batches of 64) at a "
            "constant rate, so the choice is the best rate for that budget: 0.0001 was still improving when it ended") in text


def test_depth_null_is_said_to_be_the_budgets(chapter):
    s, ctx, _ = chapter
    depth = s.numeric_frame("depth")
    text = F.depth_markdown(depth, 1e-5, ctx)
    assert "no measurable difference" in text and "24 updates on 500 images" in text
    assert "not evidence that depth does not matter" in text
    won = depth.assign(val_accuracy=depth["val_accuracy"].where(depth["unfreeze_fraction"] == 0.0, depth["val_accuracy"] + 0.05))
    text = F.depth_markdown(won, 1e-5, ctx)
    assert "**better**" in text and "not evidence" not in text and "hold for that budget only" in text


def crossover_table(tmp_path: Path) -> pd.DataFrame:
    """The study's whole-split runs (frozen, all layers, scratch) with records, at 64 px."""
    rows = []
    cx = tmp_path / "crossover"
    b_ft = {"train_images": 16200, "passes_per_epoch": 1, "steps_per_epoch": 507, "epochs": 8, "steps": 4056}
    for seed in range(3):
        for arm, acc, flags in (("frozen", 0.895, ""), ("finetune_all", 0.961, "not converged" if seed != 1 else ""),
                                ("scratch", 0.83, "")):
            name = f"{arm}_all_seed{seed}"
            if arm == "finetune_all":
                run = record(cx / name, image_size=64, train=16200, batch=32, epochs=8, lr=3e-4, schedule="cosine",
                             early_stopping=3, curve=(0.79, 0.91, 0.93, 0.95, 0.95, 0.954, 0.95, 0.954), test=acc,
                             budget=b_ft, warnings=[flags] if flags else [])  # fmt: skip
            elif arm == "scratch":
                curve = [0.5 + 0.03 * i for i in range(12)]
                if seed == 1:
                    curve[-1] -= 0.05  # its best is the 11th of 12 epochs
                run = record(cx / name, image_size=64, train=16200, batch=32, epochs=12, lr=1e-3, schedule="cosine",
                             curve=curve, test=acc, phase="scratch")  # fmt: skip
            else:
                run = record(cx / name, image_size=64, train=16200, head_only=True, test=acc)
            rows.append({"arm": arm, "size": "all", "n_per_class": 1620.0, "seed": seed, "test_acc": acc + 0.001 * seed,
                         "test_images": 5400, "warnings": flags, "run": run})  # fmt: skip
        rows += [{"arm": a, "size": 50, "n_per_class": 50.0, "seed": seed, "test_acc": v + 0.001 * seed, "test_images": 5400,
                  "warnings": "", "run": None} for a, v in (("frozen", 0.80), ("finetune_all", 0.85), ("scratch", 0.5))]  # fmt: skip
    return pd.DataFrame(rows)


@pytest.fixture
def headline(tmp_path):
    ref = tmp_path / "reference"
    return {"frozen": Path(record(ref / "frozen", train=16200, head_only=True, test=0.9346)),
            "finetune": Path(record(ref / "finetune", train=16200, batch=64, epochs=6, lr=3e-4, schedule="cosine",
                                    test=0.9689, curve=(0.9, 0.93, 0.95, 0.96, 0.965, 0.968), warnings=["not converged"])),
            "scratch_plateau": Path(record(ref / "plateau", image_size=64, train=16200, epochs=60, lr=2e-3,
                                           schedule="cosine", test=0.9537, curve=[0.9] * 59 + [0.95], phase="scratch"))}  # fmt: skip


def test_reconciliation_lists_every_difference_of_the_three_setups(tmp_path, headline):
    P = resolve_params(FT.NOTEBOOK, profile="cpu", out_dir=str(tmp_path / "03_finetune"))
    cross = crossover_table(tmp_path)
    diffs = CX.differences(cross)
    depth = pd.DataFrame([{"unfreeze_fraction": f, "seed": s, "val_accuracy": 0.865 + 0.002 * f + 0.001 * s, "val_n": 5400,
                           "run": record(tmp_path / f"d{f:g}_s{s}")} for f in (0.0, 1.0) for s in range(3)])  # fmt: skip
    text = CX.reconciliation(P, diffs, 1e-5, depth, cross, headline)
    assert "| input size | 128 px | 64 px | 128 px |" in text
    assert "| fine-tuning updates | 24 (3 epochs × 8 steps) | 4,056 (8 epochs × 507 steps) | 1,524 (6 epochs × 254 steps) |" in text
    assert "| peak learning rate | 1e-05 | 0.0003 | 0.0003 |" in text
    assert ("They differ in input size, labelled training images, fine-tuning updates, batch size, peak learning rate, "
            "schedule and stopping.") in text
    assert "24 updates at a constant 1e-05; the crossover's run above took 4,056 at a peak rate 30 times higher (0.0003)" in text
    # defect 6: the two gains, and how each arm moves between the input sizes, from the records
    assert "the headline (128 px) 93.46% and 96.89% ⚠ not converged (+3.4 points)" in text
    assert re.search(r"the frozen base moves \+3\.9 points \(95 % CI [^)]*\): \*\*better\*\*", text)
    assert "the fine-tuned network +0.7 points" in text and "the input size is one of the differences" in text
    assert "(64 px; the 3 seeds both arms ran) has the frozen base at 89.6% and all layers fine-tuned at 96.2% ⚠ not converged (2/3 runs)" in text
    assert 'so the sweep\'s "no measurable difference" says what so small a budget does' in text


# ------------------------------------------------------------------------------------------
# Defect 5: the scratch arm's budget, and the plateau run beside it
# ------------------------------------------------------------------------------------------


def test_scratch_arm_is_said_to_be_bound_by_its_budget_and_the_plateau_run_is_cited(tmp_path, headline):
    cross = crossover_table(tmp_path)
    text = CX.scratch_note(cross, headline["scratch_plateau"])
    assert "best validation epoch was 12, 11, 12 of 12 in its 3 runs (the last in 2 of them)" in text
    assert "bound by the budget, a lower bound for this network from random weights" in text
    assert "no run is flagged" in text  # the sanity rule left them unflagged: said, not hidden
    assert "(60 epochs at 64 px, Adam, peak learning rate 0.002, cosine schedule;" in text
    assert "reaches 95.37% on 16,200 training images" in text
    assert re.search(r"against this study's frozen arm at 1,620 images per class \(89\.\d%\): \+5\.\d points [^)]*\): \*\*better\*\*", text)
    full = CX.narrative(cross, CX.differences(cross), headline["scratch_plateau"])
    assert "- **From scratch** reaches" in full and "reaches 95.37%" in full


# ------------------------------------------------------------------------------------------
# Defect 7: the depth figure's caption says what is drawn; the intervals are in the table
# ------------------------------------------------------------------------------------------


def template_text() -> str:
    nb = json.loads((REPO / "notebooks" / "03_finetune.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"])


def test_depth_caption_describes_the_panels_and_the_table_holds_the_intervals(chapter):
    text = template_text()
    assert "Each point is one seed; bars are means with ±1 standard deviation." not in text
    assert "±1 standard deviation over the seeds (no per-seed points)" in text
    assert "Neither panel draws the paired 95 % interval the verdicts use" in text
    assert "summaries.finetune.depth_table(depth)" in text
    s, ctx, _ = chapter
    t = F.depth_table(s.numeric_frame("depth"), ctx)
    assert t.loc["base frozen (head only)", "vs frozen base, paired by seed"] == "(reference)"
    assert "95 % CI" in t.loc["all blocks unfrozen", "vs frozen base, paired by seed"]


# ------------------------------------------------------------------------------------------
# Defect 8: the BatchNorm text is chosen by its interval and states the runs' limits
# ------------------------------------------------------------------------------------------


def test_batchnorm_text_follows_its_interval_and_states_its_limits(chapter):
    s, ctx, _ = chapter
    bn = s.numeric_frame("batchnorm")
    text = F.batchnorm_markdown(bn, 1e-5, ctx)
    assert "**no measurable difference**" in text and "neither shows the pitfall nor rules it out" in text
    assert "as the mechanism above predicts" not in text
    assert "Both arms' means ended below the head-only model of the same seeds (86.3 ± 0.1 %)" in text
    assert "These runs fine-tune at the recipe's rate 0.0003 with batches of 16, not at the 1e-05 section 2 chose" in text
    assert "the book asks for at least 5 seeds for arms that cheap and this section has 3" in text
    clear = bn.assign(val_accuracy=bn["val_accuracy"].where(bn["batchnorm"] == BN_FROZEN, 0.60 + 0.001 * bn["seed"]))
    clear = clear.assign(val_accuracy=clear["val_accuracy"].where(clear["batchnorm"] != BN_FROZEN, 0.85 + 0.001 * clear["seed"]))
    text = F.batchnorm_markdown(clear, 3e-4, ctx)
    assert text.startswith("updating against frozen -25.0 points") and "): **worse**" in text.split(" (updating")[0]
    assert "cost accuracy, as the mechanism above predicts" in text
    assert "not at the" not in text  # the runs' rate is the chosen one here
    template = template_text()
    assert "section 4 measures what happens otherwise" not in template
    assert "then sees different activations" not in template and "could then see different activations" in template


# ------------------------------------------------------------------------------------------
# Defect 9: labels
# ------------------------------------------------------------------------------------------


def test_summary_names_the_width_and_the_crossovers_own_input_size(chapter):
    s, ctx, _ = chapter
    text = s.notebook_markdown(ctx)
    assert text.startswith("*Numbers from this run (cpu profile, MobileNetV2 α = 0.35, 128 px; sections 2-4:")
    assert ("- **Crossover (section 5):** on the test split, paired by seed with a 95 % interval (MobileNetV2 α = 0.35 "
            "at 64 px, not the 128 px of sections 1-4), fine-tuning the top blocks") in text


def test_template_section_numbers_and_grid_span():
    text = template_text()
    assert "three to four orders of magnitude" not in text and "with the depth sweep of section 2" not in text
    assert "with the depth sweep of section 3" in text
