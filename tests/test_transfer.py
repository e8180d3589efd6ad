"""Chapter 01 study module (eurosat_lib.experiments.transfer) and models.build_small_cnn."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eurosat_lib import data as D
from eurosat_lib import gradcam as G
from eurosat_lib import models as M
from eurosat_lib.experiments import ParameterError, resolve_params, run
from eurosat_lib.experiments import transfer as TL
from eurosat_lib.experiments.core import RunResult


# --------------------------------------------------------------------------------------------
# build_small_cnn follows the models contract
# --------------------------------------------------------------------------------------------


def test_small_cnn_follows_the_models_contract(tmp_path):
    import keras

    model = M.build_small_cnn(10, augment="flip", head=M.HeadConfig(dense_units=(8,), dropout=0.1), seed=0)
    names = [layer.name for layer in model.layers]
    assert names[:6] == ["image", "to_float", "augment", "resize", "preprocess", "backbone"]
    assert names[-1] == "predictions" and "head_pool" in names and "head_dense_0" in names
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape[1:]) == (64, 64, 3)
    # describe_model reads the "preprocess" layer: "unit" (x / 255), no registry backbone.
    info = M.describe_model(model)
    assert info["preprocessing"] == "unit" and info["expected_preprocessing"] is None
    assert info["blocks"] == 4 and info["backbone_output"] == "block4_relu" and info["feature_dim"] == 128
    assert info["head"] == {"pooling": "avg", "dense_units": [8], "dropout": 0.1}
    # Everything trains from scratch, BatchNorm included.
    assert M.count_params(model)["non_trainable"] == 2 * sum((32, 64, 128, 128))  # only BN moving stats
    assert not info["bn_frozen"]
    # Blocks follow the VGG rule: block_names and set_trainable by block work.
    assert M.block_names(model) == ["block1", "block2", "block3", "block4"]
    M.set_trainable(model, "block4")
    assert not model.get_layer("backbone").get_layer("block3_conv1").trainable
    assert model.get_layer("backbone").get_layer("block4_conv1").trainable
    # The backbone ends in the last conv feature map: Grad-CAM and feature caching work.
    x = D.make_synthetic(n_per_class=1).images[:3]
    cams = G.grad_cam(model, x)
    assert cams.shape == (3, 64, 64) and cams.min() >= 0 and cams.max() <= 1
    extractor, head = M.split_feature_extractor(model)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(head(extractor(x))), keras.ops.convert_to_numpy(model(x)), atol=1e-5)
    # A saved model reloads with the same outputs.
    model.save(tmp_path / "cnn.keras")
    again = keras.models.load_model(tmp_path / "cnn.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5)


def test_small_cnn_rejects_bad_arguments():
    with pytest.raises(ValueError, match="filters"):
        M.build_small_cnn(filters=())
    with pytest.raises(ValueError, match="augment"):
        M.build_small_cnn(augment="mixup")
    m = M.build_small_cnn(3, filters=(4, 8), head=M.HeadConfig(pooling="max", dropout=0.0))
    assert m.output.shape[-1] == 3 and M.describe_model(m)["head"]["pooling"] == "max"


# --------------------------------------------------------------------------------------------
# Parameters and specs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_profiles_resolve_with_every_study_parameter(profile):
    P = resolve_params(TL.NOTEBOOK, profile=profile)
    for name in ("compare_image_size", "resolutions", "preprocessing_modes", "heads", "head_dropout", "lr_scratch", "epochs"):
        assert getattr(P, name) is not None, name
    assert P.image_size in P.resolutions  # section 2's run at this size is shared with sections 3 and 4


@pytest.mark.parametrize(
    "given, message",
    [
        ({"heads": [[256], [0]]}, r"parameter 'heads' must be a non-empty list of hidden-layer lists"),
        ({"resolutions": [16, 64]}, r"parameter 'resolutions' must be a non-empty list of input sizes"),
        ({"preprocessing_modes": ["auto", "imagenet"]}, r"parameter 'preprocessing_modes' must be"),
        ({"head_dropout": 1.0}, r"parameter 'head_dropout' must be a dropout rate"),
    ],
)
def test_bad_study_parameters_fail_naming_them(given, message):
    with pytest.raises(ParameterError, match=message):
        resolve_params(TL.NOTEBOOK, profile="smoke", **given)


def test_compare_specs_give_the_three_models_the_same_budget():
    P = resolve_params(TL.NOTEBOOK, profile="cpu")
    specs = TL.compare_specs(P, seed=1)
    assert list(specs) == list(TL.COMPARE_MODELS)
    frozen, scratch, cnn = specs.values()
    for s in specs.values():
        (phase,) = s.phases
        assert (phase.epochs, phase.batch_size, phase.schedule, s.seed, s.n_per_class) == (P.epochs, P.batch_size, "cosine", 1, P.n_per_class)
        assert phase.early_stopping == P.epochs  # keeps the best validation epoch, never stops early
        assert s.eval_splits == ("val", "test")
    assert frozen.weights == "imagenet" and frozen.phases[0].use_feature_cache and frozen.augment is None
    assert scratch.weights is None and scratch.backbone == frozen.backbone and scratch.backbone_kwargs == frozen.backbone_kwargs
    assert scratch.augment == cnn.augment == "flip" and not scratch.phases[0].use_feature_cache
    assert scratch.phases[0].learning_rate == P.lr_scratch and frozen.phases[0].learning_rate == P.lr_head
    assert isinstance(cnn, TL.SmallCNNSpec) and cnn.backbone == TL.SMALL_CNN and cnn.weights is None
    assert len({s.key() for s in specs.values()}) == 3 and len({s.name for s in specs.values()}) == 3
    assert cnn.to_dict()["backbone"] == TL.SMALL_CNN
    with pytest.raises(ValueError, match="SmallCNNSpec is for backbone"):
        TL.SmallCNNSpec(name="x", backbone="ResNet50", phases=frozen.phases)
    with pytest.raises(ValueError, match="no phases"):
        TL.SmallCNNSpec(name="x")


def test_probe_runs_are_shared_between_sweeps():
    P = resolve_params(TL.NOTEBOOK, profile="cpu")
    a = TL.probe_spec(P, image_size=P.image_size, seed=0)
    b = TL.probe_spec(P, image_size=P.image_size, preprocessing="auto", dense_units=(), seed=0)
    assert a.name == b.name == f"probe_{P.image_size}px_auto_linear_seed0" and a.key() == b.key()
    c = TL.probe_spec(P, image_size=P.image_size, dense_units=(512, 256), seed=0)
    assert c.name.endswith("_512-256_seed0") and c.head.dense_units == (512, 256) and c.head.dropout == P.head_dropout
    assert TL.probe_spec(P, image_size=64, preprocessing="unit", seed=2).name == "probe_64px_unit_linear_seed2"
    assert a.eval_splits == ("val",)  # sweeps never look at the test split


# --------------------------------------------------------------------------------------------
# Tables from run records
# --------------------------------------------------------------------------------------------


def _fake_run(tmp_path, name, val_acc, hist):
    record = {
        "params": {"spec_key": name},
        "metrics": {"val": {"accuracy": val_acc, "macro_f1": val_acc - 0.01}},
        "history": [{"name": "head", "history": hist}],
        "timings": {"fit_seconds": 3.0, "phases": {"head": {"epochs_run": len(hist["loss"]), "feature_seconds": 1.5}}},
        "model_info": {"params": {"total": 100, "trainable": 10}},
        "extra": {"train_size": 50},
    }
    return RunResult(record=record, run_dir=tmp_path / name)


def test_rows_curves_and_paired_gaps(tmp_path):
    hist = {"loss": [2.0, 1.0, 0.5], "accuracy": [0.3, 0.6, 0.8], "val_loss": [1.8, 0.9, 1.1], "val_accuracy": [0.4, 0.7, 0.65]}
    res = _fake_run(tmp_path, "r", 0.7, hist)
    row = TL.run_row(res, model="m", seed=0)
    assert row["best_epoch"] == 2 and row["epochs_run"] == 3 and row["train_accuracy"] == 0.8
    assert row["test_accuracy"] is None and row["total_params"] == 100 and row["feature_seconds"] == 1.5
    assert TL.best_epoch({"val_loss": [None, 0.5, 0.7]}) == 2 and TL.best_epoch({}) is None
    curves = TL.epoch_curves([({"model": "m", "seed": 0}, res)])
    assert list(curves["epoch"]) == [1, 2, 3] and list(curves["val_accuracy"]) == [0.4, 0.7, 0.65]
    df = pd.DataFrame({"seed": [0, 0, 1, 1], "size": [64, 224, 64, 224], "val_accuracy": [0.80, 0.90, 0.82, 0.86]})
    gap = TL.paired_gap(df, "size", 224, 64)
    np.testing.assert_allclose(gap.to_numpy(), [0.10, 0.04])
    table = TL.mean_sd(df, "size")
    assert table.loc[224, ("val_accuracy", "count")] == 2
    np.testing.assert_allclose(table.loc[64, ("val_accuracy", "mean")], 0.81)


def test_preprocessing_ranges_show_what_the_backbone_receives():
    images = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    t = TL.preprocessing_ranges(images, "MobileNetV2", ["auto", "unit", "none", "caffe", "tf"])
    assert list(t.index) == ["tf", "unit", "none", "caffe"]  # "auto" is MobileNetV2's "tf": shown once
    assert t.loc["tf", "correct"] and not t.loc["unit", "correct"]
    assert (t.loc["tf", "min"], t.loc["tf", "max"]) == (-1.0, 1.0)
    assert (t.loc["unit", "min"], t.loc["unit", "max"]) == (0.0, 1.0)
    assert t.loc["none", "max"] == 255.0 and t.loc["caffe", "min"] < -100


# --------------------------------------------------------------------------------------------
# A real (tiny, eager) run of the small CNN through run()
# --------------------------------------------------------------------------------------------


def test_small_cnn_runs_through_run_and_writes_a_record(tmp_path):
    P = resolve_params(TL.NOTEBOOK, profile="smoke", out_dir=str(tmp_path), n_per_class=2, val_n_per_class=2, test_n_per_class=2)
    data = D.make_synthetic(n_per_class=10, seed=0)
    spec = TL.compare_specs(P, seed=0)[TL.COMPARE_MODELS[2]]
    res = run(P, spec, data, model_fn=lambda s: TL.small_cnn_model(s, data.num_classes), save_model=False)
    rec = json.loads((tmp_path / spec.name / "record.json").read_text())
    assert rec["status"] == "complete" and rec["params"]["backbone"] == TL.SMALL_CNN
    assert rec["model_info"]["preprocessing"] == "unit" and set(rec["metrics"]) == {"val", "test"}
    row = TL.run_row(res, model="cnn", seed=0)
    assert row["train_size"] == 20 and 0 <= row["test_accuracy"] <= 1
    again = run(P, spec, data, model_fn=lambda s: pytest.fail("a finished run must be reused"))
    assert again.record["params"]["spec_key"] == spec.key()


# --------------------------------------------------------------------------------------------
# The chapter's paragraphs: verdicts from the paired interval, diagnoses from the numbers
# --------------------------------------------------------------------------------------------


def test_cpu_profile_has_the_statistical_power_of_issue_12():
    P = resolve_params(TL.NOTEBOOK, profile="cpu")
    assert P.val_n_per_class is None  # the whole validation split: seconds on cached features
    assert len(P.seeds) >= 3 and len(P.probe_seeds) >= 5  # probes cost seconds: >= 5 seeds
    assert TL.probe_spec(P, image_size=P.image_size, seed=4).val_n_per_class is None
    for spec in TL.compare_specs(P, seed=0).values():
        assert spec.val_n_per_class is None and spec.phases[0].val_n_per_class == P.monitor_n_per_class


def _records(tmp_path, rows, n_val=5400, n_test=5400, flags=()):
    """Fake run folders with records holding the rows' numbers (their ``run`` column set); a row's
    ``history`` (a Keras history dict) becomes the record's one phase."""
    for r in rows:
        folder = tmp_path / f"{r['key']}_{r['seed']}"
        folder.mkdir()
        hist = r.pop("history", None)
        rec = {"params": {"image_size": 64}, "metrics": {"val": {"accuracy": r["val_accuracy"], "n": n_val},
                                                         "test": {"accuracy": r.get("test_accuracy", 0.5), "n": n_test}},
               "warnings": list(flags) if r["key"] in r.get("flagged", ()) else [], "timings": {}}
        if hist is not None:
            rec["history"] = [{"name": "head", "history": hist}]
        (folder / "record.json").write_text(json.dumps(rec))
        r["run"] = str(folder)
    return pd.DataFrame(rows)


def _heads(tmp_path, lin_val, deep_val, lin_train, deep_train):
    """A linear and a ``512-256`` head per seed, their training accuracy logged over two epochs."""
    rows = [{"key": h, "head": h, "seed": s, "val_accuracy": v,
             "history": {"accuracy": [0.5, t], "val_loss": [1.0, 0.8]}}
            for h, vals, trains in (("linear", lin_val, lin_train), ("512-256", deep_val, deep_train))
            for s, (v, t) in enumerate(zip(vals, trains))]  # fmt: skip
    tmp_path.mkdir(exist_ok=True)
    return _records(tmp_path, rows)


def test_sweep_and_head_paragraphs_say_what_the_interval_says(tmp_path):
    from eurosat_lib.summaries import RecordContext
    from eurosat_lib.summaries import transfer as ST

    ctx = RecordContext(root=tmp_path)
    lin = [0.80, 0.81, 0.79, 0.80, 0.82]
    deep_lower = [v - 0.05 for v in lin]  # 5 points worse on every seed
    hd = _heads(tmp_path / "under", lin, deep_lower, [0.9] * 5, [0.8, 0.81, 0.79, 0.8, 0.8])
    text = ST.sweep_paragraph(hd, "head", "linear", ctx=ctx)
    assert "**worse**" in text and "5 seeds" in text and "5,400 validation images" in text
    diag = ST.head_diagnosis(hd, "512-256", ctx=ctx)
    assert "underfits" in diag and "overfit" not in diag.replace("not overfitting", "")
    # the same validation gap with training accuracy as high as the linear head's: overfitting
    hd2 = _heads(tmp_path / "over", lin, deep_lower, [0.9] * 5, [0.95, 0.96, 0.94, 0.95, 0.97])
    assert "*overfits*" in ST.head_diagnosis(hd2, "512-256", ctx=ctx)
    # noise only: no verdict word but "no measurable difference"
    noisy = hd.assign(val_accuracy=lin + [0.83, 0.78, 0.80, 0.77, 0.84])
    text = ST.sweep_paragraph(noisy, "head", "linear", ctx=ctx)
    assert "no measurable difference" in text and "**worse**" not in text and "**better**" not in text
    assert "measurable difference" in ST.head_diagnosis(noisy, "512-256", ctx=ctx)


def test_compare_paragraph_flags_budget_bound_runs_and_broken_ones(tmp_path):
    from eurosat_lib.summaries import RecordContext
    from eurosat_lib.summaries import transfer as ST

    ctx = RecordContext(root=tmp_path)
    models = list(TL.COMPARE_MODELS)
    accs = {models[0]: [0.85, 0.86, 0.84], models[1]: [0.60, 0.62, 0.61], models[2]: [0.10, 0.11, 0.09]}
    rows = [{"key": m, "model": m, "seed": s, "val_accuracy": a, "test_accuracy": a, "train_size": 1000,
             "flagged": (models[1], models[2])} for m in models for s, a in enumerate(accs[m])]  # fmt: skip
    cmp = _records(tmp_path, rows, flags=("not converged",))
    text = ST.compare_paragraph(cmp, 15, ctx=ctx)
    assert "1,000 training images and 15 epochs" in text and "5,400 test images" in text
    assert text.count("still improving when the budget ended in 3 of 3") == 2
    assert "**worse**" in text  # the scratch network, 24 points below on every seed
    assert "gap is partly its budget" in text  # a worse arm that was still improving
    (tmp_path / "chance").mkdir()
    cmp2 = _records(tmp_path / "chance", [dict(r, flagged=(models[2],)) for r in rows], flags=("chance-level",))
    text2 = ST.compare_paragraph(cmp2, 15, ctx=ctx)
    assert "not compared: a flagged run" in text2 and "no run is flagged as still improving when the budget ended (3 run(s))" in text2
    # with histories: the best epochs are stated, and a last-epoch best is never called a plateau
    for i, r in enumerate(cmp2["run"]):
        rec_path = Path(r) / "record.json"
        rec = json.loads(rec_path.read_text())
        rec["history"] = [{"name": "scratch", "history": {"val_accuracy": [0.5, 0.6, 0.62, 0.61] if i % 3 else [0.5, 0.6, 0.61, 0.62]}}]
        rec_path.write_text(json.dumps(rec))
    text3 = ST.compare_paragraph(cmp2, 15, ctx=RecordContext(root=tmp_path))
    assert "best validation accuracy came at epoch 4, 3 and 3 of 4: 1 of 3 run(s) at the last epoch" in text3
    assert "levelled off" not in text3
