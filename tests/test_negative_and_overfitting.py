"""Chapters 02 and 04: the pure pieces that decide what the book says (verdicts, paired gaps,
budgets, the source task, the selection leak, test-set scenarios). No training here; the
notebooks' smoke runs exercise the training paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib import models as M
from eurosat_lib.experiments import ParameterError, resolve_params
from eurosat_lib.experiments import negative_transfer as NT
from eurosat_lib.experiments import overfitting as OF


# --------------------------------------------------------------------------------------------
# 02 negative transfer
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mean, sd, expected",
    [(0.05, 0.01, "negative"), (-0.05, 0.01, "positive"), (0.005, 0.01, "inconclusive"), (-0.01, 0.02, "inconclusive"),
     (0.02, float("nan"), "negative (1 seed)"), (-0.02, float("nan"), "positive (1 seed)"), (float("nan"), 0.1, "inconclusive")],
)  # fmt: skip
def test_verdict_needs_the_gap_beyond_one_seed_sd(mean, sd, expected):
    assert NT.verdict(mean, sd) == expected


def test_paired_gaps_and_summary():
    transfer = pd.DataFrame({"n_per_class": [5, 5, 100, 100], "seed": [0, 1, 0, 1], "test_error": [0.30, 0.34, 0.20, 0.22],
                             "run": ["t0", "t1", "t2", "t3"]})  # fmt: skip
    scratch = pd.DataFrame({"n_per_class": [5, 5, 100, 100], "seed": [0, 1, 0, 1], "test_error": [0.60, 0.62, 0.10, 0.14],
                            "run": ["s0", "s1", "s2", "s3"]})  # fmt: skip
    gaps = NT.paired_gaps(transfer, scratch)
    np.testing.assert_allclose(gaps["gap"], [-0.30, -0.28, 0.10, 0.08])
    assert list(gaps["run_scratch"]) == ["s0", "s1", "s2", "s3"]
    s = NT.summarise_gaps(gaps, "n_per_class").set_index("n_per_class")
    assert s.loc[5, "verdict"] == "positive" and s.loc[100, "verdict"] == "negative"
    assert s.loc[100, "gap_mean"] == pytest.approx(0.09) and s.loc[100, "gap_sd"] == pytest.approx(math.sqrt(2e-4))
    assert s.loc[100, "seeds_negative"] == 2 and s.loc[5, "seeds_negative"] == 0 and s.loc[5, "seeds"] == 2
    # A scratch row matching two transfer rows is a bug in the caller, not a silent duplicate.
    with pytest.raises(pd.errors.MergeError):
        NT.paired_gaps(transfer, pd.concat([scratch, scratch]))


def test_every_arm_gets_the_same_step_budget():
    assert NT.budget_epochs(1000, 32, 15, 60) == 15  # 32 steps per epoch: epochs decide
    assert NT.budget_epochs(50, 32, 15, 60) == 30  # 2 steps per epoch: the floor of 60 steps decides
    assert NT.budget_epochs(5, 32, 1, 0) == 1
    with pytest.raises(ValueError, match="n_images"):
        NT.budget_epochs(0, 32, 15, 60)


def test_source_task_is_disjoint_from_targets_and_has_shuffled_labels():
    data = D.make_synthetic(n_per_class=40, seed=0)
    P = resolve_params("02_negative_transfer", profile="smoke", source_n_per_class=5, n_grid=[2, 4], case_n=4, seeds=[0, 1])
    src = NT.shuffled_source_data(P, data)
    train = data.get_split("train")
    targets = set()
    for s in P.seeds:
        targets |= set(train.file_ids[D.subset_indices(train.labels, n_per_class=4, seed=s, num_classes=10)])
    assert not targets & set(src.file_ids)
    # Same class counts, but labels no longer follow the images.
    assert np.bincount(src.labels, minlength=10).tolist() == [5] * 10
    true = {f: l for f, l in zip(train.file_ids, train.labels)}
    assert np.mean([true[f] == l for f, l in zip(src.file_ids, src.labels)]) < 0.5
    with pytest.raises(ValueError, match="only"):
        NT.source_indices(train.labels, 10_000, np.array([], dtype=int))


def test_negative_transfer_parameters_are_validated():
    with pytest.raises(ParameterError, match="'cases'"):
        resolve_params("02_negative_transfer", profile="smoke", cases=["imagenet_frozen", "no_such_case"])
    with pytest.raises(ParameterError, match="'small_size'"):
        resolve_params("02_negative_transfer", profile="smoke", small_size=16)
    assert set(resolve_params("02_negative_transfer", profile="cpu").cases) <= set(NT.CASES)


def test_regularisation_configs_are_a_parameter_with_the_baseline():
    from eurosat_lib.experiments import overfitting as OF

    assert resolve_params("04_overfitting", profile="cpu").reg_configs == list(OF.REG_CONFIGS)
    assert resolve_params("04_overfitting", profile="smoke", reg_configs=["none", "dropout"]).reg_configs == ["none", "dropout"]
    for bad in (["dropout"], ["none", "weight decay"], ["none", "none"], "none"):
        with pytest.raises(ParameterError, match=r"'reg_configs' must be a list of distinct names .* includes 'none'"):
            resolve_params("04_overfitting", profile="smoke", reg_configs=bad)


def test_scratch_momentum_reaches_nested_batchnorm():
    model = M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    assert M.set_bn_momentum(model, 0.9) > 40
    import keras

    bns = [l for l in model._flatten_layers(include_self=False, recursive=True) if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.momentum == 0.9 for l in bns)
    assert M.set_bn_momentum(model, 0.9) == 0  # nothing left to change


# --------------------------------------------------------------------------------------------
# 04 overfitting: what an unrepresentative or reused test set reports
# --------------------------------------------------------------------------------------------


def test_choosing_on_the_test_set_is_optimistic():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(10), 100)
    # 30 configurations that are all equally good (70 %): any difference on a test set is noise.
    correct = rng.random((30, labels.size)) < 0.7
    val = rng.random(30)
    leak = OF.selection_leak(val, correct, labels, [5, None])
    small, full = leak.iloc[0], leak.iloc[1]
    assert small.test_images == 50 and full.test_images == 500
    # The best of 30 on 50 images looks much better than it is; on fresh data it is ~70 %.
    assert small.leaky_reported >= 0.78 and abs(small.leaky_fresh - 0.7) < 0.05
    assert small.optimism > full.optimism > 0
    assert abs(small.honest_fresh - 0.7) < 0.05
    with pytest.raises(ValueError, match="correct must be"):
        OF.selection_leak(val[:3], correct, labels, [5])


def test_stratified_halves_are_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), [10, 20] * 5)
    a, b = OF.stratified_halves(labels)
    assert not set(a) & set(b) and len(a) + len(b) == labels.size
    assert np.bincount(labels[a]).tolist() == np.bincount(labels[b]).tolist() == [5, 10] * 5


def test_small_and_skewed_test_sets_spread_around_the_truth():
    labels = np.repeat(np.arange(10), 100)
    # A model perfect on classes 0-4 and useless on 5-9: 50 % on the real distribution.
    correct = labels < 5
    scen = OF.test_set_scenarios(labels, correct, sizes=[20, 1000], n_draws=300, skew_size=200)
    table = OF.spread_table(scen, honest=0.5)
    assert table.loc["stratified 1000", "median"] == 0.5 and table.loc["stratified 1000", "off_by_more_than_2_points"] == 0
    assert table.loc["stratified 20", "off_by_more_than_2_points"] == 0  # stratified: exactly 10 of each half
    assert table.loc["random 20", "off_by_more_than_2_points"] > 0.5
    skew = table.loc["class-skewed 200"]
    assert skew.p95 - skew.p5 > 0.3
    assert OF._apportion(np.array([0.5, 0.3, 0.2]), 7).tolist() == [4, 2, 1]
