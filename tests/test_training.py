"""eurosat_lib.training: phases, feature caching, resume after a crash, accelerators."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import REPO, needs_real_data
from eurosat_lib import data as D
from eurosat_lib import models as M
from eurosat_lib import training as T


def test_phase_config_rejects_bad_values_naming_them():
    with pytest.raises(ValueError, match=r"learning_rate must be a positive number in phase 'finetune', got -0\.001"):
        T.PhaseConfig("finetune", learning_rate=-1e-3)
    with pytest.raises(ValueError, match="epochs must be a non-negative integer"):
        T.PhaseConfig(epochs=2.5)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        T.PhaseConfig(optimizer="rmsprop")
    with pytest.raises(ValueError, match="use_feature_cache needs a frozen base"):
        T.PhaseConfig(unfreeze="all", use_feature_cache=True)
    with pytest.raises(ValueError, match="phase names must be unique"):
        T.train_phases(None, None, None, [T.PhaseConfig("a"), T.PhaseConfig("a")])


def test_array_sequence_order_depends_only_on_seed_and_epoch():
    x = np.arange(100)[:, None]
    a, b = T.ArraySequence(x, x[:, 0], 10, shuffle=True, seed=3), T.ArraySequence(x, x[:, 0], 10, shuffle=True, seed=3)
    a.set_epoch(4)
    b.set_epoch(1)
    b.set_epoch(4)
    assert np.array_equal(a[0][0], b[0][0])
    a.set_epoch(5)
    assert not np.array_equal(a[0][0], b[0][0])
    assert sorted(np.concatenate([a[i][1] for i in range(len(a))]).tolist()) == list(range(100))
    val = T.ArraySequence(x, None, 32)
    assert len(val) == 4 and np.array_equal(val[3][:, 0], np.arange(96, 100))


def test_configure_accelerator_is_off_on_cpu():
    acc = T.configure_accelerator()
    assert acc.gpus == () and not acc.mixed_precision and not acc.jit_compile and not acc.multi_gpu
    import keras

    assert keras.mixed_precision.global_policy().name == "float32"
    acc = T.configure_accelerator(mixed_precision=True)
    try:
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        model = M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.get_layer("head_pool").compute_dtype == "float16"
    finally:
        T.configure_accelerator(mixed_precision=False)
    with pytest.raises(ValueError, match="mixed_precision must be True, False or 'auto'"):
        T.configure_accelerator(mixed_precision="yes")


def _tiny_model(seed=0):
    return M.build_model(
        "MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35}, augment="flip",
        head=M.HeadConfig(dense_units=(16,), dropout=0.3), seed=seed,
    )  # fmt: skip


@pytest.mark.slow
def test_two_phases_train_and_record_history(tmp_path):
    syn = D.make_synthetic(n_per_class=12, seed=0)
    train, val, _ = syn.splits()
    T.set_seed(0)
    model = M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    M.set_trainable(model, "frozen")
    phases = [
        T.PhaseConfig("head", epochs=2, learning_rate=1e-2, batch_size=16),
        T.PhaseConfig("finetune", epochs=2, learning_rate=1e-3, batch_size=16, unfreeze="block_14", schedule="cosine", optimizer="sgd"),
    ]
    res = T.train_phases(model, train, val, phases, run_dir=tmp_path / "run", seed=0)
    assert [r.name for r in res] == ["head", "finetune"]
    assert [r.epochs_run for r in res] == [2, 2]
    assert res[1].trainable_params > res[0].trainable_params > 0
    assert set(res[0].history) >= {"loss", "accuracy", "val_loss", "val_accuracy"}
    run = tmp_path / "run"
    assert (run / "history_head.csv").is_file() and (run / "phase_finetune.weights.h5").is_file()
    assert (run / "checkpoints" / "best_finetune.weights.h5").is_file()
    state = json.loads((run / "state.json").read_text())
    assert set(state["completed"]) == {"head", "finetune"}
    # Re-running a finished run trains nothing and restores the final weights.
    before = [w.copy() for w in model.get_weights()]
    model2 = M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    again = T.train_phases(model2, train, val, phases, run_dir=run, seed=0)
    assert all(r.skipped for r in again)
    for a, b in zip(before, model2.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_without_checkpoints_a_phase_is_recorded_and_stale_backups_are_dropped(tmp_path):
    """checkpoints=False (smoke runs): no per-epoch files, the finished phase still recorded and
    reused; a backup left by an earlier checkpointed attempt is removed, never resumed later."""
    import keras

    syn = D.make_synthetic(n_per_class=4, seed=0)
    train, val, _ = syn.splits()
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, activation="softmax")])  # fmt: skip
    run = tmp_path / "run"
    stale = run / "checkpoints" / "head"
    stale.mkdir(parents=True)
    (stale / "training_metadata.json").write_text('{"epoch": 1, "batch": 0}')
    phase = T.PhaseConfig("head", epochs=2, batch_size=8)
    res = T.fit_phase(model, train, val, phase, run_dir=run, accelerator=T.Accelerator(run_eagerly=True), checkpoints=False)
    assert res.epochs_run == 2 and not res.resumed and len(res.history["val_loss"]) == 2
    assert not (run / "checkpoints").exists() or not any((run / "checkpoints").rglob("*"))
    assert (run / "phase_head.weights.h5").is_file()
    assert json.loads((run / "state.json").read_text())["completed"]["head"]["epochs_run"] == 2
    again = T.fit_phase(model, train, val, phase, run_dir=run, accelerator=T.Accelerator(run_eagerly=True), checkpoints=False)
    assert again.skipped


_RESUME_SCRIPT = textwrap.dedent(
    """
    import os, sys, numpy as np
    import eurosat_lib
    import keras
    from eurosat_lib import data as D, models as M, training as T

    run_dir, crash_epoch, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    T.set_seed(0, deterministic=True)
    syn = D.make_synthetic(n_per_class=10, seed=0)
    train, val, _ = syn.splits()
    # A small stand-in with every stateful part the resume contract must cover: random
    # augmentation and dropout (seed generators), BatchNorm (moving statistics), Adam's slots.
    inp = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 255.0, name="to_float")(inp)
    x = M.RandomDihedral(seed=0, name="augment")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, name="conv")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    x = keras.layers.Dropout(0.3, seed=0, name="head_dropout")(x)
    probs = keras.layers.Dense(10, activation="softmax", name="predictions")(x)
    model = keras.Model(inp, probs)

    class Crash(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == crash_epoch and batch == 2:
                os._exit(17)  # a hard kill mid-epoch: no cleanup, no exception handling
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    phases = [T.PhaseConfig("scratch", epochs=4, learning_rate=1e-2, batch_size=16)]
    res = T.train_phases(model, train, val, phases, run_dir=run_dir, seed=0,
                         extra_callbacks=[Crash()] if crash_epoch >= 0 else [])
    np.savez(out, *model.get_weights(), epochs=res[0].epochs_run, resumed=res[0].resumed,
             history=np.array(res[0].history["loss"]))
    """
)


def _run(script_path, *args):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(script_path), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_killed_and_resumed_run_matches_an_unbroken_run(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(_RESUME_SCRIPT)
    unbroken = _run(script, tmp_path / "unbroken", -1, tmp_path / "a.npz")
    assert unbroken.returncode == 0, unbroken.stderr[-2000:]
    crashed = _run(script, tmp_path / "broken", 2, tmp_path / "unused.npz")
    assert crashed.returncode == 17, crashed.stderr[-2000:]
    assert not (tmp_path / "unused.npz").exists()
    meta = json.loads((tmp_path / "broken" / "checkpoints" / "scratch" / "training_metadata.json").read_text())
    assert meta["epoch"] == 2  # epochs 0 and 1 were backed up before the kill
    resumed = _run(script, tmp_path / "broken", -1, tmp_path / "b.npz")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert int(a["epochs"]) == int(b["epochs"]) == 4
    assert bool(b["resumed"]) and not bool(a["resumed"])
    np.testing.assert_allclose(a["history"], b["history"], rtol=1e-5)
    weight_keys = [k for k in a.files if k.startswith("arr_")]
    assert len(weight_keys) == 8  # conv (2), bn (4 incl. moving stats), dense (2)
    for k in weight_keys:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6, err_msg=k)
    # the record of the interrupted run is whole: 4 epochs in the CSV log, no duplicates
    lines = (tmp_path / "broken" / "history_scratch.csv").read_text().strip().splitlines()
    assert [ln.split(",")[0] for ln in lines[1:]] == ["0", "1", "2", "3"]


@needs_real_data
@pytest.mark.slow
def test_cached_features_match_end_to_end_frozen_training(real_data, tmp_path):
    train = real_data.get_split("train", n_per_class=30, seed=0)
    val = real_data.get_split("val", n_per_class=20, seed=0)
    test = real_data.get_split("test", n_per_class=50, seed=0)
    accs, secs = {}, {}
    for cached in (False, True):
        T.set_seed(0)
        model = M.build_model("MobileNetV2", weights="imagenet", image_size=64, backbone_kwargs={"alpha": 0.35})
        phase = T.PhaseConfig("head", epochs=6, learning_rate=3e-3, batch_size=32, use_feature_cache=cached)
        res = T.fit_phase(model, train, val, phase, seed=0)
        prob = model.predict(test.images, verbose=0, batch_size=256)  # the FULL model, head put back
        accs[cached] = float((prob.argmax(1) == test.labels).mean())
        secs[cached] = res.seconds_per_epoch
    assert accs[False] > 0.6, accs
    assert abs(accs[True] - accs[False]) <= 0.01, accs
    assert secs[True] < secs[False]


def test_feature_cache_is_reused_and_keyed_by_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path))
    import keras

    images = D.make_synthetic(n_per_class=2).images
    inp = keras.Input((64, 64, 3))
    ext = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inp)))
    f1 = T.extract_features(ext, images)
    files = list((tmp_path / "features").glob("*.npy"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr(ext, "predict_on_batch", lambda b: calls.append(1))
    f2 = T.extract_features(ext, images)
    assert not calls and np.array_equal(f1, f2)
    monkeypatch.undo()
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path))
    ext.layers[1].kernel.assign(ext.layers[1].kernel * 2)
    f3 = T.extract_features(ext, images)
    assert len(list((tmp_path / "features").glob("*.npy"))) == 2 and not np.allclose(f1, f3)


def test_fit_phase_says_when_features_came_from_the_cache_and_can_pay_for_them(tmp_path, monkeypatch):
    """The second head phase on the same images reads the cache (and says so); with
    reuse_features=False it extracts again, so its time includes the extraction."""
    monkeypatch.setenv("EUROSAT_DATA_DIR", str(tmp_path))
    data = D.make_synthetic(n_per_class=6, seed=0)
    train, val = data.get_split("train", n_per_class=3), data.get_split("val", n_per_class=1)
    model = M.build_model("MobileNetV2", weights=None, image_size=32, backbone_kwargs={"alpha": 0.35}, augment=None)
    phase = T.PhaseConfig("head", epochs=1, batch_size=8, use_feature_cache=True)
    first = T.fit_phase(model, train, val, phase)
    again = T.fit_phase(model, train, val, phase)
    calls = []
    real = T.predict_batches
    monkeypatch.setattr(T, "predict_batches", lambda *a, **k: calls.append(1) or real(*a, **k))
    paid = T.fit_phase(model, train, val, phase, reuse_features=False)
    assert (first.features_from_cache, again.features_from_cache, paid.features_from_cache) == (False, True, False)
    assert len(calls) == 2  # train and val features extracted again


_JAX_TRAIN = textwrap.dedent(
    """
    import keras, numpy as np
    from eurosat_lib import data as D, models as M, training as T
    assert keras.backend.backend() == "jax"
    syn = D.make_synthetic(n_per_class=6, seed=0)
    train, val, _ = syn.splits()
    # VGG16 at 32 px cut after block3: a small graph to compile on JAX's CPU backend, with the
    # in-model augmentation layers, which hold JAX seed state
    model = M.build_model("VGG16", weights=None, image_size=32, augment="flip", seed=0, truncate_at="block3",
                          head=M.HeadConfig(dense_units=(8,)))
    M.set_trainable(model, "frozen")
    res = T.train_phases(model, train, val, [
        T.PhaseConfig("head", epochs=1, batch_size=16, use_feature_cache=True),
        T.PhaseConfig("finetune", epochs=1, batch_size=16, learning_rate=1e-4, unfreeze="block3")])
    losses = [v for r in res for v in r.history["loss"] + r.history["val_loss"]]
    assert len(losses) == 4 and all(np.isfinite(losses)), losses
    # Unjitted, JAX dispatches op by op (hundreds of tiny compiles): the default must jit.
    assert model.jit_compile is True and T.configure_accelerator().jit_compile is True
    print("OK", keras.backend.backend(), [r.epochs_run for r in res])
    """
)


@pytest.mark.slow
def test_training_runs_on_the_jax_backend(tmp_path):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="", EUROSAT_DATA_DIR=str(tmp_path))
    r = subprocess.run([sys.executable, "-c", _JAX_TRAIN], env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OK jax [1, 1]" in r.stdout


def _tiny_dense_model():
    import keras

    return keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(10, activation="softmax")])  # fmt: skip


def test_a_resumed_phase_does_not_shorten_the_next_phase(tmp_path):
    """Issue 16 item 1: BackupAndRestore leaves the model's ``_initial_epoch`` at the epoch it
    resumed from, and the next phase's ``fit`` started there: fine-tuning ran 1 of 3 epochs."""
    import keras

    syn = D.make_synthetic(n_per_class=4, seed=0)
    train, val, _ = syn.splits()
    run = tmp_path / "run"
    acc = T.Accelerator(run_eagerly=True)
    phases = [T.PhaseConfig("head", epochs=3, batch_size=8), T.PhaseConfig("finetune", epochs=3, batch_size=8, learning_rate=1e-4)]

    class Crash(keras.callbacks.Callback):  # dies inside epoch 2 of the head phase, after 2 backups
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        T.fit_phase(_tiny_dense_model(), train, val, phases[0], run_dir=run, accelerator=acc, extra_callbacks=[Crash()])
    assert json.loads((run / "checkpoints" / "head" / "training_metadata.json").read_text())["epoch"] == 2
    model = _tiny_dense_model()
    res = T.train_phases(model, train, val, phases, run_dir=run, accelerator=acc)
    assert res[0].resumed and [r.epochs_run for r in res] == [3, 3]
    assert len(res[1].history["loss"]) == 3
    rows = (run / "history_finetune.csv").read_text().strip().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1", "2"]
    assert getattr(model, "_initial_epoch", None) is None  # nothing left for a later fit


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: bytes([b[0] ^ 0xFF]) + b[1:] if b else b"\xff", id="flipped-bytes"),
        pytest.param(lambda b: b'{"done": []}', id="other-layout"),
        pytest.param(lambda b: b'{"completed": {"head": {"name": "head"}}}', id="partial-entry"),
    ],
)
def test_an_unreadable_state_file_is_reported_and_means_no_finished_phase(tmp_path, damage):
    """Issue 16 item 4: a damaged state.json gave UnicodeDecodeError/KeyError with no file named,
    and every retry failed the same way. Now: a warning naming the file, the phase trained again."""
    syn = D.make_synthetic(n_per_class=4, seed=0)
    train, val, _ = syn.splits()
    run = tmp_path / "run"
    acc = T.Accelerator(run_eagerly=True)
    phase = T.PhaseConfig("head", epochs=1, batch_size=8)
    T.fit_phase(_tiny_dense_model(), train, val, phase, run_dir=run, accelerator=acc, checkpoints=False)
    state = run / "state.json"
    state.write_bytes(damage(state.read_bytes()))
    with pytest.warns(RuntimeWarning, match=r"state\.json is unreadable .*no completed phases"):
        res = T.fit_phase(_tiny_dense_model(), train, val, phase, run_dir=run, accelerator=acc, checkpoints=False)
    assert not res.skipped and res.epochs_run == 1
    assert json.loads(state.read_text())["completed"]["head"]["epochs_run"] == 1  # repaired


def test_a_phase_can_score_a_validation_subset_each_epoch(monkeypatch):
    """val_n_per_class: each epoch scores a fixed stratified subset; the phase's keys of old runs stay."""
    import keras

    syn = D.make_synthetic(n_per_class=60, seed=0)
    train, val, _ = syn.splits()
    per_class = np.bincount(val.labels, minlength=10)
    assert per_class.min() > 3
    sub = T.monitor_subset(val, 3)
    assert np.bincount(sub.labels, minlength=10).tolist() == [3] * 10
    assert set(sub.file_ids) <= set(val.file_ids)
    assert T.monitor_subset(val, 3).file_ids.tolist() == sub.file_ids.tolist()  # the same images every time
    assert T.monitor_subset(val, int(per_class.max())) is val  # nothing to drop
    mixed = val.take(np.flatnonzero((val.labels != 0) | (np.arange(len(val)) % 2 == 0)))
    with pytest.raises(ValueError, match="val_n_per_class=.*use at most"):
        T.monitor_subset(mixed, int(np.bincount(mixed.labels).max()) - 1)
    with pytest.raises(ValueError, match="val_n_per_class"):
        T.PhaseConfig("finetune", val_n_per_class=0)
    assert "val_n_per_class" not in T.PhaseConfig().to_dict()  # a run written before the field keeps its key
    assert T.PhaseConfig(val_n_per_class=3).to_dict()["val_n_per_class"] == 3

    seen: list[int] = []
    real = T.ArraySequence

    def spy(x, y, *args, **kwargs):
        seen.append(len(y))
        return real(x, y, *args, **kwargs)

    monkeypatch.setattr(T, "ArraySequence", spy)
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Rescaling(1 / 255), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, activation="softmax")])  # fmt: skip
    res = T.fit_phase(model, train, val, T.PhaseConfig("head", epochs=2, batch_size=8, val_n_per_class=3),
                      accelerator=T.Accelerator(run_eagerly=True), checkpoints=False, tensorboard=False)  # fmt: skip
    assert seen == [len(train), 30] and len(res.history["val_accuracy"]) == 2
    assert all(round(a * 30, 6) == round(a * 30) for a in res.history["val_accuracy"])  # scored on 30 images
