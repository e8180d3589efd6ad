"""Chapter 03 (fine-tuning): which layers each unfreeze policy trains, what the recipe's runs are
made of, and what each study trains and returns. The studies run against a stand-in for
``run`` that records the specs and returns made-up records, so no test here trains a network."""

from __future__ import annotations

import math

import keras
import pandas as pd
import pytest

from eurosat_lib import models as M
from eurosat_lib.experiments import finetune as FT
from eurosat_lib.experiments import recipes as R
from eurosat_lib.experiments import resolve_params
from eurosat_lib.experiments.core import RunResult

BLOCKS = 19  # MobileNetV2: stem, expanded_conv, block_1 .. block_16, top


def params(**over):
    return resolve_params(FT.NOTEBOOK, profile="smoke", **over)


# ------------------------------------------------------------------------------------------
# Unfreeze policies
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fraction, policy",
    [(-0.5, "frozen"), (0.0, "frozen"), (0.01, "top"), (0.1, "block_16"), (0.25, "block_13"), (0.5, "block_8"),
     (0.99, "stem"), (1.0, "all"), (1.5, "all")],
)  # fmt: skip
def test_unfreeze_policy_names_the_first_of_the_top_blocks(fraction, policy):
    assert R.unfreeze_policy("MobileNetV2", fraction) == policy
    if policy not in ("frozen", "all"):
        names = M.block_names("MobileNetV2")
        assert len(names) == BLOCKS
        # the top round(f * n) blocks, at least one, are unfrozen
        assert len(names) - names.index(policy) == max(1, round(fraction * BLOCKS))


def trainable_backbone_layers(model):
    backbone = model.get_layer("backbone")
    return {layer.name for layer in backbone.layers if layer.trainable and layer.weights}


@pytest.fixture(scope="module")
def small_model():
    return M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})


def test_policies_train_the_expected_layers_and_keep_batchnorm_frozen(small_model):
    model = small_model
    M.set_trainable(model, R.unfreeze_policy("MobileNetV2", 0.0), freeze_bn=True)
    assert trainable_backbone_layers(model) == set()
    # only the head trains
    assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.get_layer("predictions").weights}

    # 0.1 of 19 blocks -> the top two: block_16 and top (Conv_1); BatchNorm stays frozen.
    M.set_trainable(model, R.unfreeze_policy("MobileNetV2", 0.1), freeze_bn=True)
    assert trainable_backbone_layers(model) == {"block_16_expand", "block_16_depthwise", "block_16_project", "Conv_1"}
    assert model.get_layer("predictions").trainable

    M.set_trainable(model, R.unfreeze_policy("MobileNetV2", 1.0), freeze_bn=True)
    backbone = model.get_layer("backbone")
    convs = {layer.name for layer in backbone.layers if layer.weights and not isinstance(layer, keras.layers.BatchNormalization)}
    assert trainable_backbone_layers(model) == convs and len(convs) == 52

    # deeper fractions train strictly more parameters
    counts = []
    for f in (0.0, 0.1, 0.25, 0.5, 1.0):
        M.set_trainable(model, R.unfreeze_policy("MobileNetV2", f), freeze_bn=True)
        counts.append(M.count_params(model)["trainable"])
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


# ------------------------------------------------------------------------------------------
# The recipe's runs
# ------------------------------------------------------------------------------------------


def test_recipe_spec_is_head_on_cached_features_then_the_top_blocks():
    P = params()
    spec = FT.recipe_spec(P, name="r", fraction=0.25, lr=3e-4, seed=2, freeze_bn=False, batch_size=8, full_test=True)
    head, tune = spec.phases
    assert (head.name, head.use_feature_cache, head.unfreeze) == ("head", True, None)
    assert (head.epochs, head.learning_rate) == (P.epochs_head, P.lr_head)
    assert tune.name == "finetune" and tune.unfreeze == "block_13" and not tune.use_feature_cache
    assert (tune.epochs, tune.learning_rate, tune.batch_size, tune.freeze_bn) == (P.epochs_finetune, 3e-4, 8, False)
    assert spec.eval_splits == ("val", "test") and spec.seed == 2 and spec.augment == "flip"
    assert spec.tags == {"chapter": FT.NOTEBOOK, "unfreeze_fraction": 0.25, "lr_finetune": 3e-4, "freeze_bn": False,
                         "batch_size": 8}  # fmt: skip
    default = FT.recipe_spec(P, name="r", fraction=0.25, lr=3e-4, seed=2)
    assert default.eval_splits == ("val",) and default.phases[1].batch_size == P.batch_size and default.phases[1].freeze_bn
    assert default.key() != spec.key()


# ------------------------------------------------------------------------------------------
# Studies, with run() replaced
# ------------------------------------------------------------------------------------------


def made_up_record(spec):
    """A finished run's record whose numbers can be traced back to the spec."""
    tune = spec.phases[-1]
    val = round(0.5 + tune.learning_rate * 100 + spec.seed / 100 + (0.2 if tune.freeze_bn else 0.0), 6)
    metrics = {"val": {"accuracy": val}}
    if "test" in spec.eval_splits:
        metrics["test"] = {"accuracy": val - 0.01}
    return {
        "metrics": metrics,
        "history": [{"name": "head", "history": {"val_accuracy": [0.3, 0.4 + spec.seed / 100]}},
                    {"name": "finetune", "history": {"val_accuracy": [val]}}],
        "model_info": {"params": {"trainable": 1000 + tune.batch_size}},
        "timings": {"phases": {"finetune": {"seconds_per_epoch": 2.5}}},
    }  # fmt: skip


@pytest.fixture
def runs(monkeypatch, tmp_path):
    calls = []

    def fake_run(P, spec, data, **kwargs):
        calls.append(spec)
        return RunResult(record=made_up_record(spec), run_dir=tmp_path / spec.name)

    monkeypatch.setattr(FT, "run", fake_run)
    return calls


def test_sweep_depth_one_row_per_fraction_and_seed(runs):
    P = params(seeds=2, unfreeze_fractions=[0.0, 0.1, 1.0])
    df = FT.sweep_depth(P, data=None)
    assert len(df) == len(runs) == 6
    assert list(zip(df["unfreeze_fraction"], df["seed"])) == [(f, s) for f in (0.0, 0.1, 1.0) for s in (0, 1)]
    assert list(df["policy"]) == ["frozen", "frozen", "block_16", "block_16", "all", "all"]
    assert [s.phases[1].unfreeze for s in runs] == list(df["policy"])
    assert all(s.phases[1].learning_rate == P.lr_finetune and s.eval_splits == ("val",) for s in runs)
    # the values come from each run's own record
    assert list(df["val_accuracy"]) == [made_up_record(s)["metrics"]["val"]["accuracy"] for s in runs]
    assert df["test_accuracy"].isna().all()  # selection runs never read the test split
    assert list(df["val_after_head"]) == pytest.approx([0.4, 0.41] * 3)
    assert set(df["trainable_params"]) == {1000 + P.batch_size} and set(df["finetune_s_per_epoch"]) == {2.5}
    assert df["run"].is_unique


def test_sweep_lr_shares_the_recipe_run_with_sweep_depth(runs):
    P = params(seeds=1, unfreeze_fractions=[0.1, 0.5], learning_rates=[1e-5, 1e-4, 1e-2], lr_finetune=1e-4)
    assert P.unfreeze_fraction == 0.1  # the smoke recipe's depth is in the depth sweep
    depth = FT.sweep_depth(P, data=None)
    lr = FT.sweep_lr(P, data=None)
    assert list(lr["lr_finetune"]) == [1e-5, 1e-4, 1e-2] and list(lr["seed"]) == [0, 0, 0]
    assert all(s.phases[1].unfreeze == "block_16" for s in runs[len(depth):])
    # the depth sweep's run at the recipe's depth IS the lr sweep's run at the recipe's rate
    shared = set(depth["run"]) & set(lr["run"])
    assert len(shared) == 1
    same = [s for s in runs if any(run.endswith("/" + s.name) for run in shared)]
    assert len(same) == 2 and same[0].key() == same[1].key()
    # higher fine-tuning rates score higher in the made-up records: the rows keep their own numbers
    assert lr["val_accuracy"].is_monotonic_increasing


def test_batchnorm_pitfall_compares_frozen_and_updating_batchnorm_at_the_small_batch(runs):
    P = params(seeds=2, small_batch=8)
    df, by_key = FT.batchnorm_pitfall(P, data=None)
    assert list(by_key) == [("frozen", 0), ("frozen", 1), ("training", 0), ("training", 1)]
    assert list(df["batchnorm"]) == ["frozen (inference mode)"] * 2 + ["updating (training mode)"] * 2
    assert [s.phases[1].freeze_bn for s in runs] == [True, True, False, False]
    assert all(s.phases[1].batch_size == 8 and s.tags["batch_size"] == 8 for s in runs)
    assert by_key[("training", 1)].run_dir.name == runs[3].name
    gap = df.groupby("batchnorm")["val_accuracy"].mean()
    assert math.isclose(gap["frozen (inference mode)"] - gap["updating (training mode)"], 0.2)


def test_run_recipe_is_scored_on_validation_and_test(runs):
    P = params()
    res = FT.run_recipe(P, data=None)
    (spec,) = runs
    assert spec.name == "recipe" and spec.eval_splits == ("val", "test") and spec.seed == P.seeds[0]
    assert spec.phases[1].unfreeze == R.unfreeze_policy(P.backbone, P.unfreeze_fraction)
    assert res.record["metrics"]["test"]["accuracy"] == pytest.approx(res.record["metrics"]["val"]["accuracy"] - 0.01)
    assert isinstance(FT.sweep_lr(P, data=None), pd.DataFrame)


# ------------------------------------------------------------------------------------------
# The shared from-scratch model_fn
# ------------------------------------------------------------------------------------------


def test_scratch_model_fn_sets_the_batchnorm_momentum_the_spec_records():
    from eurosat_lib import training as T
    from eurosat_lib.experiments.core import ExperimentSpec, build_from_spec

    def momenta(model):
        return {layer.momentum for layer in model._flatten_layers(include_self=False, recursive=True)
                if isinstance(layer, keras.layers.BatchNormalization)}

    phase = (T.PhaseConfig("scratch", epochs=1, unfreeze="all", freeze_bn=False),)
    common = dict(backbone="MobileNetV2", backbone_kwargs={"alpha": 0.35}, weights=None, image_size=32, phases=phase)
    keras_default = momenta(build_from_spec(ExperimentSpec("plain", **common)))
    assert keras_default == {0.999}  # what the recipe exists to change
    tagged = R.scratch_model_fn(num_classes=3)(ExperimentSpec("tagged", tags={"bn_momentum": 0.8}, **common))
    assert momenta(tagged) == {0.8} and tagged.output.shape[-1] == 3
    untagged = R.scratch_model_fn()(ExperimentSpec("untagged", **common))
    assert momenta(untagged) == {M.SCRATCH_BN_MOMENTUM}


# ------------------------------------------------------------------------------------------
# The committed runs of the book
# ------------------------------------------------------------------------------------------


def test_recipe_rebuilds_the_specs_of_the_books_committed_runs():
    """The recipe functions still describe the runs the book's chapter 3 was made from (same spec
    key), so a refactor cannot silently retrain them or orphan their records."""
    import dataclasses
    import json

    from conftest import REPO

    records = sorted((REPO / "book" / "runs" / "cpu" / FT.NOTEBOOK).glob("*/record.json"))
    assert len(records) >= 5
    for path in records:
        p = json.loads(path.read_text())["params"]
        head, tune = p["phases"]
        P = resolve_params(
            FT.NOTEBOOK, profile="cpu", backbone=p["backbone"], alpha=p["backbone_kwargs"].get("alpha"),
            weights=p["weights"], image_size=p["image_size"], epochs_head=head["epochs"], lr_head=head["learning_rate"],
            epochs_finetune=tune["epochs"], n_per_class=p["n_per_class"], val_n_per_class=p["val_n_per_class"],
            test_n_per_class=p["test_n_per_class"],
        )  # fmt: skip
        # None given to resolve_params means "the profile decides": the record's own value is set after
        P = dataclasses.replace(P, monitor_n_per_class=tune.get("val_n_per_class"))
        t = p["tags"]
        spec = FT.recipe_spec(P, name=p["name"], fraction=t["unfreeze_fraction"], lr=t["lr_finetune"], seed=p["seed"],
                              freeze_bn=t["freeze_bn"], batch_size=t["batch_size"], full_test="test" in p["eval_splits"])  # fmt: skip
        assert spec.key() == p["spec_key"], path.parent.name


def test_cpu_profile_has_the_statistical_power_of_issue_12():
    P = resolve_params(FT.NOTEBOOK, profile="cpu")
    assert len(P.seeds) >= 3 and P.val_n_per_class is None and P.monitor_n_per_class == 30
    spec = FT.recipe_spec(P, name="x", fraction=0.5, lr=3e-4, seed=0)
    head, tune = spec.phases
    assert spec.val_n_per_class is None and head.val_n_per_class is None and tune.val_n_per_class == 30


def test_chapter_3_summary_states_paired_intervals_and_never_quotes_a_collapsed_rate(tmp_path):
    """With a rate chosen on validation, every Summary comparison is paired by seed with its interval;
    a diverged rate is named as collapsed, not as the sweep's "worst" setting."""
    import json

    from eurosat_lib.summaries import RecordContext
    from eurosat_lib.summaries.finetune import FinetuneSummary

    def run(name: str, flags=()) -> str:
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "record.json").write_text(json.dumps({"status": "complete", "warnings": list(flags),
                                                        "metrics": {"val": {"n": 5400}, "test": {"n": 5400}}}))
        return str(folder)

    run("recipe")
    lr_rows, depth_rows, bn_rows = [], [], []
    for seed in range(3):
        for lr, acc, flags in ((1e-5, 0.90, ()), (1e-4, 0.95, ()), (1e-2, 0.10, ("diverged",))):
            lr_rows.append({"lr_finetune": lr, "seed": seed, "val_accuracy": acc + 0.002 * seed, "val_after_head": 0.88,
                            "run": run(f"lr{lr:g}_s{seed}", flags)})
        for f, acc in ((0.0, 0.88), (0.5, 0.95), (1.0, 0.885)):
            depth_rows.append({"unfreeze_fraction": f, "seed": seed, "val_accuracy": acc + 0.003 * (-1) ** seed,
                               "run": run(f"d{f:g}_s{seed}")})
        for mode, acc in (("frozen (inference mode)", 0.94), ("updating (training mode)", 0.80)):
            bn_rows.append({"batchnorm": mode, "seed": seed, "val_accuracy": acc + 0.001 * seed, "run": run(f"bn{mode[:3]}_s{seed}")})
    s = FinetuneSummary(profile="cpu", parameters={"backbone": "MobileNetV2", "image_size": 64, "seeds": [0, 1, 2],
                                                   "unfreeze_fraction": 0.5, "small_batch": 8},
                        tables={"depth": depth_rows, "learning_rate": lr_rows, "batchnorm": bn_rows},
                        lr_chosen=1e-4, val_after_head=0.88, val_after_finetune=0.95, recipe_test_accuracy=0.96)
    text = s.notebook_markdown(RecordContext(root=tmp_path))
    lr_line = next(ln for ln in text.splitlines() if ln.startswith("- **Learning rate"))
    assert "0.0001 chosen on validation" in lr_line and "1e-05 -5." in lr_line and "**worse**" in lr_line
    assert "0.01 collapsed" in lr_line and "10.0" not in lr_line  # the collapse is named, its accuracy not quoted
    depth_line = next(ln for ln in text.splitlines() if ln.startswith("- **Depth"))
    assert "top 50% of the blocks unfrozen +7.0" in depth_line and "all blocks unfrozen +0.5" in depth_line
    assert depth_line.split("all blocks unfrozen")[1].count("no measurable difference") == 1
    assert "updating against frozen -14.0" in text and "CI" in text
    assert "- **Recipe (one run):**" in text and "**better**" in text.split("- **Recipe")[1].splitlines()[0]
