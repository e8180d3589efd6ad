"""The fine-tuning crossover study (experiments/crossover.py) and chapter 3's learning-rate pick.

The study runs for real once, at smoke size on real images (conftest.smoke_crossover: the smoke
notebook's own study, every arm, then again here to show that a second call trains nothing); the
statistics run on constructed tables whose answer is known, so each check can fail."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib.experiments import crossover as CX
from eurosat_lib.experiments import finetune as FT
from eurosat_lib.experiments import resolve_params
from eurosat_lib.experiments.core import RunResult


def params(tmp_path=None, **over):
    out = {"out_dir": str(tmp_path / "03_finetune")} if tmp_path is not None else {}
    return resolve_params(FT.NOTEBOOK, profile="smoke", **{**out, **over})


# ------------------------------------------------------------------------------------------
# Budgets and the plan
# ------------------------------------------------------------------------------------------


def test_budget_scales_steps_with_data_and_states_itself():
    P = params(crossover_epoch_steps=25, crossover_min_steps=150, crossover_epochs=5, crossover_scratch_epochs=12,
               crossover_scratch_min_steps=1200, crossover_patience=4)  # the cpu profile's budget
    tiny, big = CX.budget(P, "finetune_all", 50), CX.budget(P, "finetune_all", 16_200)
    # 50 images = 2 batches: repeated 13 times so that an epoch is >= 25 steps, and >= 150 steps in all
    assert (tiny.passes_per_epoch, tiny.steps_per_epoch) == (13, 21) or tiny.steps_per_epoch >= 25
    assert tiny.steps >= 150 and tiny.epochs > 5
    # the whole split: one pass per epoch, the stated epoch count
    assert (big.passes_per_epoch, big.epochs, big.steps_per_epoch) == (1, 5, 507)
    scratch = CX.budget(P, "scratch", 50)
    assert scratch.steps >= 1200 and scratch.patience is None and scratch.head_epochs == 0
    assert "no early stopping: the whole budget" in scratch.rule and "cosine" in big.rule
    # fine-tuning runs to a plateau under its cap too (a fixed 3-6 epochs left runs still improving)
    assert big.patience == tiny.patience == 4 and "early stopping after 4 epochs" in big.rule
    with pytest.raises(ValueError, match="unknown crossover arm 'frozn'"):
        CX.budget(P, "frozn", 50)


@pytest.mark.parametrize("profile", ["cpu", "gpu"])
def test_scratch_never_gets_a_smaller_budget_than_fine_tuning(profile):
    """A fair baseline: at every size the scratch arm trains at least as many steps as the
    fine-tuned arms' cap, all of them (no early stopping: it spends its whole budget)."""
    P = resolve_params(FT.NOTEBOOK, profile=profile)
    for images in (50, 200, 500, 1_500, 5_000, 16_200):
        s, f = CX.budget(P, "scratch", images), CX.budget(P, "finetune_all", images)
        assert s.steps >= f.steps, (profile, images, s.steps, f.steps)
        assert s.patience is None and f.patience == P.crossover_patience


def test_plan_runs_cheapest_first_and_every_arm_has_its_recipe():
    P = params(crossover_sizes=[2, 4], crossover_seeds=[0, 1], crossover_cheap_seeds=3)
    data = D.make_synthetic(n_per_class=40, seed=0)
    plan = CX.plan(P, data)
    costs = [c for _, c in plan]
    assert costs == sorted(costs) and plan[0][0].tags["arm"] == "frozen"
    arms = [s.tags["arm"] for s, _ in plan]
    assert {a: arms.count(a) for a in CX.ARMS} == {"frozen": 6, "finetune_top": 4, "finetune_all": 4, "scratch": 4}
    specs = {s.name: s for s, _ in plan}
    frozen, top, every, scratch = (specs[f"{a}_n4_seed0"] for a in CX.ARMS)
    assert [p.name for p in frozen.phases] == ["head"] and frozen.phases[0].use_feature_cache
    assert top.phases[1].unfreeze == "block_13" and every.phases[1].unfreeze == "all"
    assert all(s.phases[1].freeze_bn and s.phases[1].schedule == "cosine" and s.weights == "imagenet" for s in (top, every))
    assert top.phases[1].early_stopping == every.phases[1].early_stopping == P.crossover_patience
    # scratch: random weights, ONE phase training everything (never a head on a frozen random base)
    (only,) = scratch.phases
    assert scratch.weights is None and only.unfreeze == "all" and not only.freeze_bn and only.optimizer == "adamw"
    # scratch runs its whole stated budget (patience cut noisy from-scratch curves short)
    assert only.early_stopping is None and scratch.tags["bn_momentum"] < 0.99
    assert scratch.tags["budget"]["patience"] is None and "no early stopping" in scratch.tags["budget"]["rule"]
    assert all(s.eval_splits == ("val", "test") and s.image_size == P.crossover_image_size for s, _ in plan)
    # every pretrained arm stops on validation accuracy, the head phases too (the loss kept
    # first-epoch weights): 6 frozen heads, 8 fine-tuned runs x (head, fine-tuning)
    stopping = [ph for s, _ in plan for ph in s.phases if ph.early_stopping]
    assert len(stopping) == 6 + 8 * 2 and {ph.early_stopping_monitor for ph in stopping} == {"val_accuracy"}
    assert all("validation accuracy" in s.tags["budget"]["rule"] for s, _ in plan if s.tags["arm"] != "scratch")
    with pytest.raises(ValueError, match=r"crossover_sizes \[30\].*smallest class has \(24\)"):
        CX.plan(params(crossover_sizes=[2, 30]), data)


# ------------------------------------------------------------------------------------------
# The study at smoke size: every arm, then a second call that trains nothing
# ------------------------------------------------------------------------------------------


def test_study_runs_every_arm_and_a_second_call_reuses_them(smoke_crossover, tmp_path):
    """Chapter 3's smoke study (trained once per test run by conftest.smoke_crossover; notebooks 02
    and 03 reuse it): 4 arms x 2 sizes of MobileNetV2 at 32 px on real images."""
    from eurosat_lib import experiments as X
    from eurosat_lib import runs as R

    P = params(None, out_dir=smoke_crossover["out_dir"])
    lines = smoke_crossover["lines"]
    assert len(lines) == 8 and all("trained in" in line for line in lines) and all(smoke_crossover["trained"])
    data = X.load_data(P.data_source, P.profile)
    table = CX.run_study(P, data, progress=lines.append)  # the second call
    assert not table["trained"].any() and all("reused" in line for line in lines[8:]) and len(lines) == 16
    assert list(table.columns) == CX.COLUMNS and table["test_acc"].between(0, 1).all()
    assert sorted(zip(table["arm"], table["n_per_class"])) == sorted((a, n) for a in CX.ARMS for n in (2, 4))
    assert (table["test_images"] == P.crossover_test_n_per_class * 10).all() and table["budget"].str.len().gt(0).all()
    records = sorted(CX.study_dir(P).glob("*/record.json"))
    stamps = [p.stat().st_mtime_ns for p in records]
    assert len(records) == 8
    # the frozen and fine-tuned arms share a subset, yet each run paid for its own head features,
    # so the table's minutes are measurements (runs.timing_trusted)
    assert not any(R.used_cached_features(R.read(p.parent)) for p in records)

    again = CX.run_study(P, data)
    assert not again["trained"].any()
    assert [p.stat().st_mtime_ns for p in records] == stamps  # nothing rewritten
    pd.testing.assert_frame_equal(again.drop(columns="trained"), table.drop(columns="trained"))
    # the records alone give the same table (chapter 4 reads it this way, training nothing)
    read = CX.read_table(CX.study_dir(P))
    pd.testing.assert_frame_equal(read.drop(columns="trained"), table.drop(columns="trained"))

    from eurosat_lib.experiments import overfitting as OF

    P4 = resolve_params(OF.NOTEBOOK, profile="smoke", out_dir=str(Path(smoke_crossover["out_dir"]).parent / "04_overfitting"))
    runs, curves = OF.crossover_curves(P4)
    assert len(runs) == 8 and sorted(zip(curves["arm"], curves["n_per_class"])) == sorted((a, n) for a in CX.ARMS for n in (2, 4))
    empty, _ = OF.crossover_curves(resolve_params(OF.NOTEBOOK, profile="smoke", out_dir=str(tmp_path / "x" / "04")))
    assert empty.empty


def test_a_contended_or_cached_timing_is_no_table_minute(tmp_path):
    """The cost table never shows a time taken beside other jobs (or one that skipped paid work)."""
    def record(**timings):
        return {"params": {"seed": 0, "tags": {"arm": "frozen", "size": 5, "budget": {"rule": "r"}}},
                "metrics": {"test": {"accuracy": 0.8, "n": 100}}, "model_info": {"num_classes": 10}, "warnings": [],
                "timings": {"fit_seconds": 90.0, "eval_seconds": 30.0, "phases": {"head": {"epochs_run": 3}}, **timings}}

    assert CX.record_row(record(contended=False), tmp_path, False)["minutes"] == 2.0
    assert CX.record_row(record(), tmp_path, False)["minutes"] == 2.0  # written before loads were kept
    for bad in ({"contended": True}, {"spans_processes": True},
                {"phases": {"head": {"epochs_run": 3, "features_from_cache": True}}}):
        row = CX.record_row(record(**bad), tmp_path, False)
        assert np.isnan(row["minutes"]) and row["test_acc"] == 0.8 and row["epochs_run"] == 3, bad


# ------------------------------------------------------------------------------------------
# The crossover size, on constructed tables
# ------------------------------------------------------------------------------------------

SIZES = [5, 20, 50, 150]


def made_table(gain: dict[int, float], noise: float = 0.002, seeds=(0, 1, 2), frozen_seeds=(0, 1, 2, 3, 4)) -> pd.DataFrame:
    """Frozen at 80 %; finetune_all = frozen + gain[size] (+ a little seed noise); 5,400 test images."""
    rows = []
    for size in SIZES:
        for seed in frozen_seeds:
            rows.append({"arm": "frozen", "size": size, "n_per_class": float(size), "seed": seed,
                         "test_acc": 0.80 + 0.003 * (seed % 3 - 1), "test_images": 5400, "warnings": ""})
        for seed in seeds:
            rows.append({"arm": "finetune_all", "size": size, "n_per_class": float(size), "seed": seed,
                         "test_acc": 0.80 + 0.003 * (seed % 3 - 1) + gain[size] + noise * (seed - 1), "test_images": 5400,
                         "warnings": "not converged" if size == 5 else ""})  # fmt: skip
    return pd.DataFrame(rows)


def test_crossover_size_is_the_smallest_size_from_which_fine_tuning_wins():
    diffs = CX.differences(made_table({5: -0.05, 20: -0.005, 50: 0.03, 150: 0.06}), arms=["finetune_all"])
    assert list(diffs["verdict"]) == ["worse", "no measurable difference", "better", "better"]
    assert (diffs["seeds"] == 3).all()  # paired on the seeds both arms ran, not the frozen arm's five
    assert diffs.loc[0, "flags"] == "not converged" and diffs.loc[3, "flags"] == ""
    cx = CX.crossover_size(diffs, "finetune_all")
    assert cx.found and cx.n_per_class == 50 and cx.size == 50 and not cx.from_smallest
    # every size's verdict is said, and the flagged runs at 5 keep their ⚠
    assert cx.describe(with_flags=False) == "from 50 labelled images per class on (below it: worse at 5; no measurable difference at 20)"
    assert cx.describe().endswith("(flagged runs enter the comparison at 5: ⚠ not converged (3/6 runs))")
    table = CX.difference_table(diffs)
    assert list(table.index) == ["5", "20", "50", "150"] and table.iloc[2, 0].endswith(": better")
    assert table.iloc[0, 0].endswith(": worse ⚠ not converged (3/6 runs)") and "[flags" not in table.iloc[0, 0]


def test_no_crossover_when_no_interval_excludes_zero():
    diffs = CX.differences(made_table({5: 0.002, 20: -0.003, 50: 0.004, 150: 0.001}, noise=0.01), arms=["finetune_all"])
    assert set(diffs["verdict"]) == {"no measurable difference"}
    cx = CX.crossover_size(diffs, "finetune_all")
    assert not cx.found and cx.size is None
    assert cx.describe(with_flags=False) == ("at none of the sizes measured (no measurable difference at 5, 20, 50 and 150): "
                                             "no crossover in the range studied (5-150 labelled images per class)")


def test_a_tie_at_the_largest_size_is_not_a_win():
    # clearly ahead at 50, but at 150 the interval includes zero: no size above which it wins
    diffs = CX.differences(made_table({5: -0.02, 20: 0.0, 50: 0.04, 150: 0.006}, noise=0.01), arms=["finetune_all"])
    assert diffs.set_index("size").loc[50, "verdict"] == "better"
    assert diffs.set_index("size").loc[150, "verdict"] == "no measurable difference"
    assert not CX.crossover_size(diffs, "finetune_all").found
    # the prose reads its verdict words from the same table
    text = CX.narrative(made_table({5: -0.02, 20: 0.0, 50: 0.04, 150: 0.006}, noise=0.01), diffs)
    assert "no size above which it always wins, so no crossover in the range studied" in text
    assert ": no measurable difference." in text


def test_wins_on_both_sides_of_a_tie_place_no_crossover_and_every_size_is_said():
    """The reviewed chapter said "crossover from 150 on" for an arm that also won at 5 and 20 and tied only
    at 50: a crossover needs no win below it. Each size's verdict is stated instead."""
    gain = {5: 0.05, 20: 0.05, 50: 0.0, 150: 0.05}
    diffs = CX.differences(made_table(gain, noise=0.005), arms=["finetune_all"])
    assert list(diffs["verdict"]) == ["better", "better", "no measurable difference", "better"]
    cx = CX.crossover_size(diffs, "finetune_all")
    assert not cx.found and cx.n_per_class is None and cx.size is None
    assert cx.describe(with_flags=False) == (
        "at 5, 20 and 150 labelled images per class but not at every size (no measurable difference at 50): no size "
        "above which it always wins, so no crossover in the range studied (5-150 labelled images per class)")
    text = CX.narrative(made_table(gain, noise=0.005), diffs)
    assert "from 150" not in text and "At 50 images per class: " in text  # the tie is quoted with its interval


def test_a_win_at_every_size_is_said_as_from_the_smallest_size_measured():
    diffs = CX.differences(made_table({5: 0.05, 20: 0.05, 50: 0.05, 150: 0.05}), arms=["finetune_all"])
    cx = CX.crossover_size(diffs, "finetune_all")
    assert cx.found and cx.from_smallest and cx.n_per_class == 5
    assert cx.describe(with_flags=False) == ("at every size measured (5-150 labelled images per class), from the smallest "
                                             "on: no crossover in that range, any lies below 5")
    assert "from 5 labelled images per class on" not in cx.describe()


def test_every_number_a_flagged_run_enters_carries_its_flag():
    """The reviewed chapter quoted the whole split's differences, made of runs flagged not converged, bare."""
    table = made_table({5: 0.05, 20: 0.05, 50: 0.05, 150: 0.05})
    table["warnings"] = np.where((table["size"] == 150) & (table["arm"] == "finetune_all") & (table["seed"] != 1),
                                 "not converged", "")  # fmt: skip
    table["run"] = [f"runs/{a}_n{s}_seed{k}" for a, s, k in zip(table["arm"], table["size"], table["seed"])]
    diffs = CX.differences(table, arms=["finetune_all"])
    assert diffs.set_index("size").loc[150, "note"] == " ⚠ not converged (2/6 runs)"
    assert diffs.set_index("size").loc[5, "note"] == ""
    text = CX.narrative(table, diffs)
    assert "At 150 images per class: " in text and text.split("At 150 images per class: ")[1].split(".\n")[0].endswith(
        "better ⚠ not converged (2/6 runs)")
    assert "(not converged: `finetune_all_n150_seed0`, `finetune_all_n150_seed2`)" in text
    recon = CX.reconciliation(params(n_per_class=150), diffs)
    assert re.search(r"at 150 images per class, the same comparison gives [^:]+ on test: better ⚠ not converged \(2/6 runs\)\.", recon)


# ------------------------------------------------------------------------------------------
# Chapter 3's learning-rate grid: the pick, and the depth sweep at the picked rate
# ------------------------------------------------------------------------------------------


def lr_rows(values: dict[float, list[float]], flags: dict[float, str] | None = None) -> pd.DataFrame:
    flags = flags or {}
    return pd.DataFrame([{"lr_finetune": lr, "seed": s, "val_accuracy": v, "warnings": flags.get(lr, "")}
                         for lr, vs in values.items() for s, v in enumerate(vs)])  # fmt: skip


def test_cpu_grid_contains_the_recipes_rates():
    P = resolve_params(FT.NOTEBOOK, profile="cpu")
    assert {1e-5, 1e-4, 3e-4, 1e-3, 1e-2} <= set(P.learning_rates) and P.lr_finetune in P.learning_rates


def test_pick_lr_takes_the_best_mean_among_sound_rates():
    lrs = lr_rows({1e-5: [0.70, 0.71], 1e-4: [0.80, 0.90], 3e-4: [0.86, 0.87], 1e-2: [0.95, 0.10]},
                  flags={1e-2: "diverged"})  # fmt: skip
    # 1e-4 has the best single seed, 3e-4 the best mean; 1e-2 is flagged and never chosen
    assert FT.pick_lr(lrs) == 3e-4
    summary = FT.lr_summary(lrs)
    assert summary.loc[1e-2, "shown"] == "diverged" and bool(summary.loc[1e-2, "broken"])
    assert summary.loc[3e-4, "shown"] == "86.50%" and not summary.loc[3e-4, "broken"]
    # a tie goes to the lower rate
    assert FT.pick_lr(lr_rows({1e-4: [0.8, 0.9], 1e-3: [0.9, 0.8]})) == 1e-4
    with pytest.raises(ValueError, match="no learning rate of the sweep is usable.*'learning_rates'"):
        FT.pick_lr(lr_rows({1e-2: [0.1, 0.1]}, flags={1e-2: "chance-level; diverged"}))


def test_depth_sweep_runs_at_the_picked_rate(monkeypatch, tmp_path):
    specs = []

    def fake_run(P, spec, data, **kwargs):
        specs.append(spec)
        rec = {"metrics": {"val": {"accuracy": 0.5}}, "history": [], "model_info": {}, "warnings": [],
               "timings": {"phases": {}}}  # fmt: skip
        return RunResult(record=rec, run_dir=tmp_path / spec.name)

    monkeypatch.setattr(FT, "run", fake_run)
    P = params(unfreeze_fractions=[0.0, 1.0])
    depth = FT.sweep_depth(P, data=None, lr=1e-3)
    assert {s.phases[1].learning_rate for s in specs} == {1e-3} and set(depth["lr_finetune"]) == {1e-3}
    assert all("_lr0.001_" in s.name for s in specs)


# ------------------------------------------------------------------------------------------
# The command line
# ------------------------------------------------------------------------------------------


def test_study_command_plans_cheapest_first_without_training(monkeypatch, tmp_path, capsys):
    from eurosat_lib import __main__ as cli
    from eurosat_lib import experiments as X

    monkeypatch.setattr(X, "load_data", lambda source, profile: D.make_synthetic(n_per_class=40, seed=0))
    out = tmp_path / "book" / "runs" / "smoke" / "03_finetune"
    assert cli.main(["study", "crossover", "--profile", "smoke", "--plan", "--out-dir", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert str(out / "crossover") in lines[0]
    names = [line.split()[0] for line in lines[1:]]
    assert len(names) == 8 and names[0].startswith("frozen_") and names[-1].startswith(("scratch_", "finetune_all_"))
    assert not out.exists()  # a plan trains nothing
    # parameters as with papermill, checked the same way
    assert cli.main(["study", "crossover", "--profile", "smoke", "--plan", "--out-dir", str(out), "-p", "crossover_seeds", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 + 2 + 3 * 2 * 2
    assert cli.main(["study", "crossover", "--profile", "smoke", "--plan", "-p", "crossover_seed", "2"]) == 2
    assert "did you mean 'crossover_seeds'" in capsys.readouterr().err


def test_plot_crossover_draws_one_line_and_band_per_arm_on_a_log_axis():
    import matplotlib.pyplot as plt

    from eurosat_lib import plots

    table = made_table({5: -0.05, 20: -0.005, 50: 0.03, 150: 0.06})
    cur = CX.curves(table)
    assert set(cur["label"]) == {"fine-tuned: all layers", "frozen base + head"}
    assert (cur["low"] < cur["mean"]).all() and (cur["mean"] < cur["high"]).all() and set(cur["seeds"]) == {3, 5}
    ax = plots.plot_crossover(cur, table).axes[0]
    assert ax.get_xscale() == "log" and len(ax.get_lines()) == 2
    assert len(ax.collections) == 5  # a band and the seeds' dots per arm, and a ring around each flagged run
    ring = ax.collections[-1]
    assert len(ring.get_offsets()) == 3 and ring.get_label() == "⚠ run flagged not converged (3)"
    assert "⚠ run flagged not converged (3)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert ax.get_xlabel() == "labelled training images per class (log scale)" and ax.get_ylabel() == "test accuracy"
    with pytest.raises(ValueError, match=r"columns \['low'\] not in the curves table"):
        plots.plot_crossover(cur.drop(columns="low"))
    plt.close("all")


def test_reconciliation_chooses_its_explanation_by_where_the_sweep_lies():
    diffs = CX.differences(made_table({5: -0.05, 20: -0.005, 50: 0.03, 150: 0.06}), arms=["finetune_all"])  # crossover 50
    depth = pd.DataFrame([{"unfreeze_fraction": f, "seed": s, "val_accuracy": 0.8 + 0.005 * s} for f in (0.0, 1.0) for s in (0, 1)])
    below = CX.reconciliation(params(n_per_class=20), diffs, 1e-4, depth)
    assert "lies below the crossover (50 images per class)" in below and "0.0001 (chosen on validation)" in below
    assert "In the depth sweep, all layers against the frozen base gave +0.0 points" in below
    above = CX.reconciliation(params(n_per_class=150), diffs, 1e-4, depth)
    assert "wins from 50 images per class on, at or below the sweep's size" in above
    assert "data size alone does not explain the sweep's result" in above
    none = CX.reconciliation(params(n_per_class=20), CX.differences(made_table({5: 0.0, 20: 0.0, 50: 0.0, 150: 0.0}), arms=["finetune_all"]))
    assert "never beats the frozen base by more than the noise" in none
