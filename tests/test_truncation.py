"""Tests for eurosat_lib.experiments.truncation (chapter 06): which blocks to cut, the run specs,
reading the answer off a sweep, and one tiny end-to-end sweep (untrained weights, eager)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib import models as M
from eurosat_lib.experiments import ParameterError, resolve_params
from eurosat_lib.experiments import truncation as TR

NAMES = M.block_names("MobileNetV2")


def params(**kw):
    return resolve_params("06_truncation", **{"profile": "smoke", **kw})


def sweep_frame(means: dict[str, list[float]], params_: dict[str, int] | None = None) -> pd.DataFrame:
    """A sweep table as sweep_cuts returns it: one row per (block, seed)."""
    rows = []
    for depth, (block, accs) in enumerate(means.items(), start=1):
        for seed, acc in enumerate(accs):
            rows.append({"block": block, "depth": depth, "feature_dim": 8 * depth,
                         "backbone_params": (params_ or {}).get(block, 1000 * depth), "seed": seed, "val_accuracy": acc})
    return pd.DataFrame(rows)


def test_stage_ends_are_where_the_shape_changes():
    shapes = [("stem", (32, 32, 16)), ("a", (32, 32, 8)), ("b", (16, 16, 8)), ("c", (16, 16, 8)),
              ("d", (8, 8, 16)), ("top", (8, 8, 64))]  # fmt: skip
    assert TR.stage_ends(shapes) == ["a", "c", "d", "top"]  # stem skipped, last block always kept
    assert TR.stage_ends(shapes, skip=()) == ["stem", "a", "c", "d", "top"]


def test_mobilenet_v2_stages_at_alpha_035():
    P = params(cuts="stages", image_size=64)
    assert TR.resolve_cuts(P) == ["expanded_conv", "block_2", "block_5", "block_9", "block_12", "block_15", "block_16", "top"]
    anatomy = TR.cut_anatomy(P, ["block_5", "top"])
    assert anatomy.loc["top", "backbone_params"] == 410_208 and anatomy.loc["top", "params_share"] == 1
    assert anatomy.loc["block_5", "feature_dim"] == 16 and anatomy.loc["block_5", "output_shape"] == "8 × 8 × 16"
    assert anatomy.loc["block_5", "depth"] == NAMES.index("block_5") + 1


def test_fractions_and_names_resolve_like_build_model(tmp_path):
    assert TR.block_at(NAMES, "block_3") == "block_3"
    assert TR.block_at(NAMES, 1.0) == NAMES[-1]
    assert TR.block_at(NAMES, 0.5) == NAMES[math.ceil(0.5 * len(NAMES)) - 1]
    model = M.build_model("MobileNetV2", weights=None, image_size=32, truncate_at=0.5, backbone_kwargs={"alpha": 0.35})
    assert M.describe_model(model)["truncated_at"] == TR.block_at(NAMES, 0.5)
    # Repeats collapse, the order is the backbone's, and the full backbone is always there.
    assert TR.resolve_cuts(params(cuts=["block_9", 0.1, "block_9"])) == [TR.block_at(NAMES, 0.1), "block_9", "top"]
    with pytest.raises(ValueError, match="unknown block 'block_99'"):
        TR.resolve_cuts(params(cuts=["block_99"]))
    with pytest.raises(ValueError, match="fraction"):
        TR.block_at(NAMES, 1.5)


def test_notebook_parameters_are_validated():
    P = resolve_params("06_truncation", profile="cpu")
    assert P.cuts == "stages" and P.image_size == 128
    assert len(P.seeds) >= 5 and len(P.finetune_seeds) >= 3 and P.val_n_per_class is None  # issue 12's power
    # a fine-tune long enough to answer: cosine decay to zero and early stopping on the watched
    # validation accuracy (two constant-rate epochs stopped it while it was still climbing back)
    tune = TR.cut_spec(P, "top", 0, finetune=True).phases[-1]
    assert P.epochs_finetune >= 8 and tune.schedule == "cosine" and tune.early_stopping == TR.FINETUNE_PATIENCE
    assert tune.early_stopping_monitor == "val_accuracy" and tune.val_n_per_class == P.monitor_n_per_class
    for bad, match in (({"cuts": "all"}, "'cuts'"), ({"cuts": [0.5, 2.0]}, "'cuts'"), ({"tolerance": 1.5}, "'tolerance'"),
                       ({"n_finetune": -1}, "'n_finetune'")):  # fmt: skip
        with pytest.raises(ParameterError, match=match):
            params(**bad)


def test_cut_spec_truncates_only_below_the_full_backbone():
    P = params()
    full = TR.cut_spec(P, "top", 0)
    cut = TR.cut_spec(P, "block_5", 1)
    assert full.truncate_at is None and cut.truncate_at == "block_5"
    assert cut.name == "cut-block_5_seed1" and cut.eval_splits == ("val",) and cut.head == TR.PROBE_HEAD
    assert [p.name for p in cut.phases] == ["head"] and cut.phases[0].use_feature_cache
    tested = TR.cut_spec(P, "block_5", 1, with_test=True)
    assert tested.eval_splits == ("val", "test") and tested.name != cut.name and tested.key() != cut.key()
    ft = TR.cut_spec(P, "block_5", 1, finetune=True)
    assert [p.name for p in ft.phases] == ["head", "finetune"] and ft.phases[1].unfreeze == "all"
    assert ft.phases[1].freeze_bn and ft.name == "cut-block_5_finetune_seed1"


def test_cut_table_and_the_chosen_cut():
    # five seeds, tight: b3 and b4 lose at most a few tenths of a point, b2 and b1 far more
    sweep = sweep_frame({"b1": [0.60, 0.62, 0.61, 0.60, 0.62], "b2": [0.80, 0.82, 0.81, 0.80, 0.81],
                         "b3": [0.898, 0.902, 0.899, 0.903, 0.900], "b4": [0.903, 0.905, 0.904, 0.906, 0.904],
                         "top": [0.905, 0.905, 0.904, 0.906, 0.905]})  # fmt: skip
    table = TR.cut_table(sweep, pd.DataFrame({"block": ["b1", "b2", "b3", "b4", "top"], "images_per_s": [500, 300, 200, 150, 100]}))
    assert list(table.index) == ["b1", "b2", "b3", "b4", "top"]
    assert table.loc["top", "drop"] == 0 and table.loc["b3", "drop"] == pytest.approx(0.0046)
    assert table.loc["b3", "drop"] < table.loc["b3", "loss_high"] < 0.01 and table.loc["top", "loss_high"] == 0
    assert table.loc["b1", "speedup"] == 5 and table.loc["top", "params_share"] == 1
    choice = TR.choose_cut(table, tolerance=0.01)
    assert choice["rule"] == "95 % upper bound" and choice["noise"] < 0.01
    assert choice["chosen"] == "b3" and choice["full"] == "top" and choice["chosen_all_safe"]
    assert choice["chosen_loss_high"] == pytest.approx(table.loc["b3", "loss_high"])
    assert (choice["cliff_from"], choice["cliff_to"]) == ("b2", "b1") and choice["cliff_step"] == pytest.approx(0.198)
    assert choice["chosen_speedup"] == 2 and choice["chosen_drop"] == pytest.approx(0.0046)
    assert np.isfinite(choice["chosen_gap_sd"])
    # A tolerance below the loss's upper bound: b3 is no longer shown safe, b4 is.
    assert TR.choose_cut(table, 0.006)["chosen"] == "b4"
    assert TR.choose_cut(table.drop(index="b4"), 0.006)["chosen"] == "top"
    # Two seeds: a mean loss of half a point, but the interval (t with 1 degree of freedom) reaches
    # far past one point, so no cut is shown within the tolerance: keep the whole backbone.
    two = TR.cut_table(sweep_frame({"b3": [0.895, 0.905], "b4": [0.90, 0.91], "top": [0.905, 0.905]}))
    choice = TR.choose_cut(two, 0.01)
    assert two.loc["b3", "drop"] < 0.01 and choice["chosen"] == "top" and choice["noise"] > 0.01
    # One seed: no interval, the mean decides (and says so). A dip in the middle: the shallow cut
    # is within tolerance but a deeper one is not.
    dip = TR.cut_table(sweep_frame({"b1": [0.90], "b2": [0.80], "top": [0.905]}))
    choice = TR.choose_cut(dip, 0.01)
    assert choice["chosen"] == "b1" and not choice["chosen_all_safe"] and choice["rule"].startswith("mean")
    assert math.isnan(choice["chosen_gap_sd"]) and math.isnan(choice["noise"])  # one seed: no spread


def test_finetune_candidates_go_down_from_the_chosen_cut():
    table = TR.cut_table(sweep_frame({"b1": [0.5], "b2": [0.7], "b3": [0.85], "b4": [0.9], "top": [0.905]}))
    choice = TR.choose_cut(table, 0.01)
    assert choice["chosen"] == "b4"
    assert TR.finetune_candidates(table, choice, 2) == ["b3", "b4", "top"]
    assert TR.finetune_candidates(table, choice, 0) == ["top"]
    full_choice = {**choice, "chosen": "top"}  # nothing within tolerance: the cuts just below the full one
    assert TR.finetune_candidates(table, full_choice, 2) == ["b3", "b4", "top"]


def test_a_tiny_sweep_end_to_end(tmp_path, monkeypatch):
    data = D.make_synthetic(n_per_class=6, seed=0)
    P = params(weights="none", image_size=32, cuts=[0.5, 1.0], n_per_class=2, val_n_per_class=1,
               speed_images=4, test_n_per_class=1, out_dir=str(tmp_path / "runs"))  # fmt: skip
    blocks = TR.resolve_cuts(P)
    sweep = TR.sweep_cuts(P, data, blocks)
    assert list(sweep.block) == blocks and sweep.val_accuracy.between(0, 1).all()
    assert sweep.backbone_params.is_monotonic_increasing and sweep.test_accuracy.isna().all()
    # the suite runs on two busy workers: a quiet machine is simulated here (the busy case is
    # tests/test_timings.py's), so the speeds are figures
    monkeypatch.setattr(TR.R, "machine_load", lambda: {"other_cores": 0.0, "cpu_count": 2})
    speed = TR.measure_speed(P, data, blocks, repeats=1)
    assert (speed.images_per_s > 0).all()
    table = TR.cut_table(sweep, speed)
    assert TR.choose_cut(table, P.tolerance)["full"] == "top"
    # Rerunning reuses the finished run folders.
    again = TR.sweep_cuts(P, data, blocks)
    assert list(again.run) == list(sweep.run) and list(again.val_accuracy) == list(sweep.val_accuracy)
    tested = TR.score_on_test(P, data, ["top"])
    assert tested.test_accuracy.notna().all() and (tested.test_images == 10).all()


def test_choice_and_finetune_paragraphs_follow_the_interval():
    from eurosat_lib.summaries import truncation as ST

    sweep = sweep_frame({"b3": [0.898, 0.902, 0.899, 0.903, 0.900], "b4": [0.903, 0.905, 0.904, 0.906, 0.904],
                         "top": [0.905, 0.905, 0.904, 0.906, 0.905]})  # fmt: skip
    table = TR.cut_table(sweep)
    text = ST.choice_paragraph(table, TR.choose_cut(table, 0.01))
    assert "**Chosen cut: after `b3`**" in text and "at most 0.67" in text and "upper end of the 95 % interval" in text
    two = TR.cut_table(sweep_frame({"b3": [0.895, 0.905], "top": [0.905, 0.905]}))
    text = ST.choice_paragraph(two, TR.choose_cut(two, 0.01))
    assert "**No cut is shown to lose at most 1 point(s)**" in text and "wider than the tolerance" in text
    rows = [{"block": b, "seed": s, "stage": st, "val_accuracy": v, "val_images": 5400}
            for b, gain in (("b3", 0.05), ("top", 0.0)) for s in range(3)
            for st, v in (("frozen + head", 0.80 + 0.01 * s), ("fine-tuned", 0.80 + 0.01 * s + gain + 0.002 * (s % 2)))]  # fmt: skip
    ft = ST.finetune_paragraph(pd.DataFrame(rows))
    assert "at `b3`" in ft and "**better**" in ft.split("at `top`")[0] and "no measurable difference" in ft.split("at `top`")[1]
