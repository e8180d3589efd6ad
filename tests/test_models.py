"""Tests for eurosat_lib.models: registry, weights, custom layers, blocks, freezing, saving.

Small inputs (32-64 px) and ``weights=None`` everywhere except where the real ImageNet files in
``../shared/data/weights`` (found through ``config.weights_search_dirs()``) are the point.
Training steps in this process use tiny graphs: tracing a full backbone's train step with
TensorFlow takes ~50 s on the 2-core machine. The JAX backend is covered by tests/test_training.py
(a model with augmentation layers, built and trained through two phases).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import math
import os
import time
from pathlib import Path

import keras
import numpy as np
import pytest

from eurosat_lib import config
from eurosat_lib import models as M

REPO = Path(__file__).resolve().parents[1]
BN = keras.layers.BatchNormalization
V2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"
V2_050 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5"
V1_025 = "mobilenet_2_5_224_tf_no_top.h5"
CONTRACT = ["image", "to_float", "resize", "preprocess", "backbone", "head_pool", "predictions"]


def find_weights(fname: str) -> Path | None:
    for d in config.weights_search_dirs():
        if (d / fname).is_file():
            return d / fname
    return None


def needs_weights(*fnames: str):
    missing = [f for f in fnames if find_weights(f) is None]
    return pytest.mark.skipif(bool(missing), reason=f"weights not in config.weights_search_dirs(): {missing}")


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64, 64, 3), dtype="uint8")


def np_(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x))


def small_v2(**kwargs) -> keras.Model:
    """MobileNetV2 alpha=0.35 at 32 px from scratch: the cheap workhorse of these tests."""
    kw = dict(weights=None, image_size=32, backbone_kwargs={"alpha": 0.35})
    kw.update(kwargs)
    return M.build_model("MobileNetV2", **kw)


def bn_stats(model: keras.Model) -> list[np.ndarray]:
    bb = model.get_layer("backbone")
    return [np_(layer.moving_mean).copy() for layer in bb.layers if isinstance(layer, BN)] + [
        np_(layer.moving_variance).copy() for layer in bb.layers if isinstance(layer, BN)
    ]


# --------------------------------------------------------------------------------------------
# Registry: every entry builds, preprocesses like Keras and has the expected blocks
# --------------------------------------------------------------------------------------------

# (first blocks, last blocks, number of blocks) as a user sees them in backbone.summary().
EXPECTED_BLOCKS = {
    "EfficientNetB0": (["stem", "block1a", "block2a", "block2b"], ["block7a", "top"], 18),
    "EfficientNetB1": (["stem", "block1a", "block1b", "block2a"], ["block7b", "top"], 25),
    "EfficientNetB2": (["stem", "block1a", "block1b"], ["block7b", "top"], 25),
    "EfficientNetB3": (["stem", "block1a", "block1b"], ["block7b", "top"], 28),
    "EfficientNetV2B0": (["stem", "block1a", "block2a", "block2b"], ["block6h", "top"], 23),
    "EfficientNetV2B1": (["stem", "block1a", "block1b", "block2a"], ["block6i", "top"], 29),
    "EfficientNetV2B2": (["stem", "block1a", "block1b"], ["block6j", "top"], 30),
    "ResNet50": (["stem", "conv2_block1", "conv2_block2", "conv2_block3", "conv3_block1"], ["conv5_block3"], 17),
    "ResNet50V2": (["stem", "conv2_block1", "conv2_block2"], ["conv5_block3", "top"], 18),
    "MobileNet": (["stem", "block_1", "block_2"], ["block_12", "block_13"], 14),
    "MobileNetV2": (["stem", "expanded_conv", "block_1", "block_2"], ["block_15", "block_16", "top"], 19),
    "MobileNetV3Small": (["stem", "expanded_conv", "expanded_conv_1"], ["expanded_conv_10", "top"], 13),
    "MobileNetV3Large": (["stem", "expanded_conv", "expanded_conv_1"], ["expanded_conv_14", "top"], 17),
    "DenseNet121": (["stem", "conv2_block1"], ["conv5_block16", "top"], 63),
    "ConvNeXtTiny": (["stem", "stage_0_block_0", "stage_0_block_1"], ["stage_3_block_2", "top"], 20),
    "Xception": (["block1", "block2", "block3"], ["block13", "block14"], 14),
    "InceptionV3": (["stem", "mixed0", "mixed1"], ["mixed9", "mixed10"], 12),
    "VGG16": (["block1", "block2"], ["block4", "block5"], 5),
}


def assert_clean_boundaries(backbone: keras.Model, ends: list[int]) -> None:
    """Independent check of the block definition: past each end, only the end's output is used."""
    ops_ = list(backbone.operations)
    index = {id(op): i for i, op in enumerate(ops_)}
    edges = [
        (index[id(p.operation)], j)
        for j, op in enumerate(ops_)
        for node in op._inbound_nodes
        for p in node.parent_nodes
        if id(p.operation) in index
    ]
    for e in ends:
        crossing = {p for p, c in edges if p <= e < c}
        assert crossing <= {e}, f"block end {ops_[e].name} is not a clean cut: {[ops_[p].name for p in crossing]}"


def test_registry_has_required_entries():
    required = {
        "EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetV2B0",
        "EfficientNetV2B1", "EfficientNetV2B2", "ResNet50", "ResNet50V2", "MobileNet", "MobileNetV2",
        "MobileNetV3Small", "MobileNetV3Large", "DenseNet121", "ConvNeXtTiny", "Xception", "InceptionV3", "VGG16",
    }
    assert required <= set(M.list_backbones())
    assert M.list_backbones() == list(M.BACKBONES)
    for name, spec in M.BACKBONES.items():
        assert spec.name == name
        assert spec.preprocessing in {"tf", "caffe", "torch", "none"}
        assert spec.min_size <= spec.default_size
        assert callable(getattr(keras.applications, spec.constructor))
        assert spec.family in M.BLOCK_RULES
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.name = "x"  # type: ignore[misc]
    assert M.get_backbone_spec("mobilenetv2") is M.BACKBONES["MobileNetV2"]


@pytest.mark.parametrize("name", list(M.BACKBONES))
def test_backbone_builds_preprocesses_like_keras_and_has_blocks(name):
    spec = M.get_backbone_spec(name)
    size = max(spec.min_size, 32)
    model = M.build_model(name, weights=None, image_size=size, head=M.HeadConfig(dropout=0.0))
    assert [layer.name for layer in model.layers] == CONTRACT
    bb = model.get_layer("backbone")
    assert tuple(bb.inputs[0].shape[1:]) == (size, size, 3)
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    probs = np_(model(images(2), training=False))
    assert probs.shape == (2, 10) and np.all(np.isfinite(probs))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)

    # Preprocess equals keras.applications.<module>.preprocess_input (which edits numpy in place).
    x = np.random.default_rng(1).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    reference = np.asarray(spec.preprocess_input()(x.copy()))
    got = np_(M.Preprocess(spec.preprocessing)(x))
    np.testing.assert_allclose(got, reference, atol=1e-3)
    assert model.get_layer("preprocess").mode == spec.preprocessing
    if spec.preprocessing == "none":
        np.testing.assert_array_equal(reference, x)  # Keras: the model normalises inside
        first = bb.layers[1]
        assert isinstance(first, (keras.layers.Rescaling, keras.layers.Normalization)) or "prestem" in first.name

    # Blocks: names users recognise, and every end is a clean cut of the graph.
    first, last, count = EXPECTED_BLOCKS[name]
    names = M.block_names(model)
    assert names[: len(first)] == first
    assert names[-len(last) :] == last
    assert len(names) == count == len(set(names))
    table = M.block_table(bb, spec.family)
    assert table[0][1] == 1 and table[-1][2] == len(bb.operations) - 1
    assert all(b[1] == a[2] + 1 for a, b in zip(table, table[1:]))
    assert_clean_boundaries(bb, [end for _, _, end in table])


def test_block_names_by_registry_name_and_family_detection():
    assert M.block_names("MobileNetV2") == ["stem", "expanded_conv"] + [f"block_{i}" for i in range(1, 17)] + ["top"]
    bare = M.build_backbone("MobileNet", 32, weights=None, alpha=0.25)
    assert M.block_names(bare) == ["stem"] + [f"block_{i}" for i in range(1, 14)]


def test_convnext_blocks_end_after_the_residual_add():
    # ConvNeXt's residual is a bare operation (not a layer): a block ending at its last *layer*
    # would drop the skip connection.
    bb = M.build_backbone("ConvNeXtTiny", 32, weights=None)
    cut = M.truncate_backbone(bb, "stage_0_block_1")
    assert not isinstance(cut.operations[-1], keras.layers.Layer)
    x = np.random.default_rng(0).uniform(0, 255, (1, 32, 32, 3)).astype("float32")
    block_in = keras.Model(bb.inputs[0], bb.get_layer("convnext_tiny_stage_0_block_1_depthwise_conv").input)
    branch = keras.Model(bb.inputs[0], bb.get_layer("convnext_tiny_stage_0_block_1_identity").output)
    np.testing.assert_allclose(np_(cut(x)), np_(block_in(x)) + np_(branch(x)), rtol=1e-5, atol=1e-5)


def test_weights_files_match_keras_sources():
    from keras.src.applications import (
        convnext, densenet, efficientnet, efficientnet_v2, inception_v3, mobilenet, mobilenet_v2,
        mobilenet_v3, resnet, vgg16, xception,
    )

    B = M.BACKBONES
    for v in ("b0", "b1", "b2", "b3"):
        wf = B[f"EfficientNet{v.upper()}"].weights_file()
        assert wf.file_hash == efficientnet.WEIGHTS_HASHES[v][1]
        assert wf.url == efficientnet.BASE_WEIGHTS_PATH + f"efficientnet{v}_notop.h5"
    for v in ("b0", "b1", "b2"):
        wf = B[f"EfficientNetV2{v.upper()}"].weights_file()
        assert wf.file_hash == efficientnet_v2.WEIGHTS_HASHES[v][1]
        assert wf.url == efficientnet_v2.BASE_WEIGHTS_PATH + f"efficientnetv2-{v}_notop.h5"
    for name, key in (("ResNet50", "resnet50"), ("ResNet50V2", "resnet50v2")):
        wf = B[name].weights_file()
        assert wf.file_hash == resnet.WEIGHTS_HASHES[key][1]
        assert wf.url == resnet.BASE_WEIGHTS_PATH + f"{key}_weights_tf_dim_ordering_tf_kernels_notop.h5"
    wf = B["ConvNeXtTiny"].weights_file()
    assert wf.file_hash == convnext.WEIGHTS_HASHES["convnext_tiny"][1]
    assert wf.url == convnext.BASE_WEIGHTS_PATH + "convnext_tiny_notop.h5"
    for name, kw, key in (
        ("MobileNetV3Small", {}, "small_224_1.0_float"),
        ("MobileNetV3Small", {"alpha": 0.75}, "small_224_0.75_float"),
        ("MobileNetV3Large", {"minimalistic": True}, "large_minimalistic_224_1.0_float"),
    ):
        wf = B[name].weights_file(**kw)
        assert wf.fname == f"weights_mobilenet_v3_{key}_no_top_v2.h5"
        assert (wf.file_hash, wf.url) == (mobilenet_v3.WEIGHTS_HASHES[key][1], mobilenet_v3.BASE_WEIGHT_PATH + wf.fname)
    for name, mod, url in (
        ("DenseNet121", densenet, densenet.DENSENET121_WEIGHT_PATH_NO_TOP),
        ("InceptionV3", inception_v3, inception_v3.WEIGHTS_PATH_NO_TOP),
        ("Xception", xception, xception.WEIGHTS_PATH_NO_TOP),
        ("VGG16", vgg16, vgg16.WEIGHTS_PATH_NO_TOP),
    ):
        wf = B[name].weights_file()
        assert wf.url == url and url.endswith("/" + wf.fname)
        assert f'"{wf.file_hash}"' in inspect.getsource(mod)
    # MobileNet family: alpha in the name, always the 224 file.
    assert B["MobileNet"].weights_file(alpha=0.25).fname == V1_025
    assert B["MobileNet"].weights_file(alpha=0.25).url == mobilenet.BASE_WEIGHT_PATH + V1_025
    assert B["MobileNet"].weights_file().fname == "mobilenet_1_0_224_tf_no_top.h5"
    assert B["MobileNetV2"].weights_file(alpha=0.35).fname == V2_035
    assert B["MobileNetV2"].weights_file(alpha=0.5).url == mobilenet_v2.BASE_WEIGHT_PATH + V2_050
    assert B["MobileNetV2"].weights_file().fname.endswith("_1.0_224_no_top.h5")
    with pytest.raises(ValueError, match="alpha"):
        B["MobileNetV2"].weights_file(alpha=0.6)


# --------------------------------------------------------------------------------------------
# Weights
# --------------------------------------------------------------------------------------------


@needs_weights(V2_035, V1_025)
def test_mobilenet_v2_real_weights_at_64_and_128(tmp_path):
    import h5py

    path = M.resolve_weights("MobileNetV2", "imagenet", alpha=0.35)
    assert Path(path).name == V2_035 and Path(path) == find_weights(V2_035)
    assert M.find_local_weights("MobileNetV2", alpha=0.35) == find_weights(V2_035)
    with h5py.File(path, "r") as f:
        first = f["Conv1/Conv1/kernel:0"][()]
        last = f["Conv_1/Conv_1/kernel:0"][()]
        bn_mean = f["Conv_1_bn/Conv_1_bn/moving_mean:0"][()]
    for size in (64, 128):
        model = M.build_model("MobileNetV2", backbone_kwargs={"alpha": 0.35}, image_size=size)
        bb = model.get_layer("backbone")
        assert bb.inputs[0].shape[1] == size
        np.testing.assert_array_equal(np_(bb.get_layer("Conv1").kernel), first)
        np.testing.assert_array_equal(np_(bb.get_layer("Conv_1").kernel), last)
        np.testing.assert_array_equal(np_(bb.get_layer("Conv_1_bn").moving_mean), bn_mean)
        # Pretrained defaults: frozen backbone, frozen BN, trainable head.
        assert bb.trainable_weights == []
        assert {id(w) for w in model.trainable_weights} == {id(w) for w in model.get_layer("predictions").weights}
        d = M.describe_model(model)
        assert d["image_size"] == size and d["bn_frozen"] and d["params"]["trainable"] == 1280 * 10 + 10
    # The MobileNet 0.25 file ("2_5" in its name) fits MobileNet alpha=0.25 at a non-standard size.
    v1 = M.build_backbone("MobileNet", 64, "imagenet", alpha=0.25)
    with h5py.File(find_weights(V1_025), "r") as f:
        np.testing.assert_array_equal(np_(v1.get_layer("conv1").kernel), f["conv1/conv1/kernel:0"][()])


@needs_weights(V2_035)
def test_pretrained_weights_are_read_once_per_file_and_again_when_it_changes(tmp_path, monkeypatch):
    import shutil

    import h5py

    copy = tmp_path / V2_035
    shutil.copy(find_weights(V2_035), copy)
    reads = []
    load = keras.Model.load_weights
    monkeypatch.setattr(keras.Model, "load_weights", lambda self, path, *a, **k: (reads.append(str(path)), load(self, path, *a, **k))[1])
    a = M.build_backbone("MobileNetV2", 64, str(copy), alpha=0.35)
    b = M.build_backbone("MobileNetV2", 96, str(copy), alpha=0.35)
    assert reads == [str(copy)]  # the second build copied the arrays read by the first
    assert len(a.weights) == len(b.weights) > 200
    for x, y in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(x, y)
    # the same file with new content (and so a new mtime) is read again, never served stale
    with h5py.File(copy, "r+") as f:
        f["Conv1/Conv1/kernel:0"][...] *= 2
    st = copy.stat()
    os.utime(copy, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    c = M.build_backbone("MobileNetV2", 64, str(copy), alpha=0.35)
    assert len(reads) == 2
    np.testing.assert_allclose(np_(c.get_layer("Conv1").kernel), 2 * np_(a.get_layer("Conv1").kernel))
    # the cached copy is not shared with a model: training one never changes the next build
    a.get_layer("Conv1").kernel.assign(np.zeros(a.get_layer("Conv1").kernel.shape))
    d = M.build_backbone("MobileNetV2", 64, str(copy), alpha=0.35)
    np.testing.assert_array_equal(np_(d.get_layer("Conv1").kernel), np_(c.get_layer("Conv1").kernel))


@needs_weights(V1_025, V2_050)
def test_wrong_architecture_weights_file_gives_clear_error():
    with pytest.raises(ValueError) as ei:
        M.build_model("MobileNetV2", weights=str(find_weights(V1_025)), backbone_kwargs={"alpha": 0.35}, image_size=64)
    msg = str(ei.value)
    assert "does not fit" in msg and "MobileNetV2" in msg and "alpha=0.35" in msg and V2_035 in msg
    with pytest.raises(ValueError, match="does not fit") as ei:  # right family, wrong alpha
        M.build_backbone("MobileNetV2", 64, find_weights(V2_050), alpha=0.35)
    assert V2_035 in str(ei.value)


@pytest.mark.parametrize("content", [b"", np.random.default_rng(0).bytes(50_000)], ids=["empty", "random-bytes"])
def test_corrupt_weights_file_is_called_corrupt_not_a_misfit(tmp_path, monkeypatch, content):
    """Issue 16: an empty or random-bytes file is corrupt (delete it, fetch it again), not a file
    that "does not fit the backbone"; the message names the path and what the official file is."""
    found = tmp_path / "weights"
    found.mkdir()
    (found / V2_035).write_bytes(content)  # the official name, found by weights="imagenet"
    monkeypatch.setenv("EUROSAT_WEIGHTS_DIR", str(found))
    with pytest.raises(M.CorruptWeightsError) as ei:
        M.build_model("MobileNetV2", weights="imagenet", backbone_kwargs={"alpha": 0.35}, image_size=32)
    msg = str(ei.value)
    assert str(found / V2_035) in msg and "corrupt" in msg and "does not fit" not in msg
    assert "delete it" in msg.lower() and "mobilenet_v2/" + V2_035 in msg  # where to fetch it again
    assert "2,019,640 bytes" in msg and "df1c3db1d0d9193719c4c70f707c56f7021f999f825bdc57454c275cf6def19f" in msg
    assert isinstance(ei.value, ValueError)  # callers that catch the old error still do

    own = tmp_path / "my base.weights.h5"  # a file of the user's own: named by its path
    own.write_bytes(content)
    with pytest.raises(M.CorruptWeightsError, match=r"(?s)my base\.weights\.h5.*is corrupt.*[Dd]elete it"):
        M.build_backbone("MobileNetV2", 32, str(own), alpha=0.35)


def test_resolve_weights_paths_and_bad_values(tmp_path):
    for w in (None, "none", "None"):
        assert M.resolve_weights("MobileNetV2", w) is None
    f = tmp_path / "mine.weights.h5"
    f.write_bytes(b"")
    assert M.resolve_weights("ResNet50", str(f)) == str(f)
    assert M.resolve_weights("ResNet50", f) == str(f)
    missing = tmp_path / "nope.h5"
    with pytest.raises(FileNotFoundError, match="nope.h5"):
        M.resolve_weights("ResNet50", str(missing))
    with pytest.raises(ValueError, match="weights"):
        M.resolve_weights("ResNet50", "imagenet21k")


def _isolate_weights_dirs(tmp_path, monkeypatch, fname: str) -> None:
    monkeypatch.setenv("EUROSAT_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    if any((d / fname).is_file() for d in config.weights_search_dirs()):
        pytest.skip(f"{fname} is present in the search dirs; cannot test the missing-file path")


def test_imagenet_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    wf = M.get_backbone_spec("ResNet50").weights_file()
    _isolate_weights_dirs(tmp_path, monkeypatch, wf.fname)
    calls = []

    def offline(fname, origin, **kwargs):
        calls.append(origin)
        raise Exception(f"URL fetch failure on {origin}: None -- [Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    t0 = time.perf_counter()
    with pytest.raises(M.WeightsUnavailableError) as ei:
        M.build_model("ResNet50", weights="imagenet", image_size=32)
    assert time.perf_counter() - t0 < 5
    assert calls == [wf.url]  # one attempt, no retries
    msg = str(ei.value)
    for part in (wf.fname, wf.url, "EUROSAT_WEIGHTS_DIR", "~/.keras/models", str(tmp_path / "weights")):
        assert part in msg
    assert isinstance(ei.value, FileNotFoundError)


def test_imagenet_unreachable_url_with_real_get_file(tmp_path, monkeypatch):
    spec = M.get_backbone_spec("ResNet50")
    wf = spec.weights_file()
    _isolate_weights_dirs(tmp_path, monkeypatch, wf.fname)
    dead = M.WeightsFile(wf.fname, "http://127.0.0.1:9/" + wf.fname, wf.file_hash)
    monkeypatch.setitem(M.BACKBONES, "ResNet50", dataclasses.replace(spec, weights=lambda **kw: dead))
    # Real download code, but its cache under tmp_path (Keras fixes KERAS_HOME at import).
    real_get_file = functools.partial(keras.utils.get_file, cache_dir=str(tmp_path / "kc"))
    monkeypatch.setattr(keras.utils, "get_file", real_get_file)
    t0 = time.perf_counter()
    with pytest.raises(M.WeightsUnavailableError) as ei:
        M.resolve_weights("ResNet50", "imagenet")
    assert time.perf_counter() - t0 < 5
    assert wf.fname in str(ei.value) and dead.url in str(ei.value)
    assert not (tmp_path / "kc" / "models" / wf.fname).exists()


def test_imagenet_download_result_is_used(tmp_path, monkeypatch):
    wf = M.get_backbone_spec("ResNet50").weights_file()
    _isolate_weights_dirs(tmp_path, monkeypatch, wf.fname)
    got = {}

    def fake_get_file(fname, origin, cache_subdir="datasets", file_hash=None, **kwargs):
        got.update(fname=fname, origin=origin, cache_subdir=cache_subdir, file_hash=file_hash)
        return str(tmp_path / fname)

    monkeypatch.setattr(keras.utils, "get_file", fake_get_file)
    assert M.find_local_weights("ResNet50") is None
    assert M.resolve_weights("ResNet50", "imagenet") == str(tmp_path / wf.fname)
    assert got == {"fname": wf.fname, "origin": wf.url, "cache_subdir": "models", "file_hash": wf.file_hash}
    # A file placed in $EUROSAT_WEIGHTS_DIR wins over downloading.
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / wf.fname).write_bytes(b"")
    monkeypatch.setattr(keras.utils, "get_file", None)
    assert M.resolve_weights("ResNet50", "imagenet") == str(tmp_path / "weights" / wf.fname)
    assert M.find_local_weights("ResNet50") == tmp_path / "weights" / wf.fname


def test_efficientnet_official_file_gets_keras_imagenet_normalisation():
    # Keras adds Rescaling(1/sqrt(std)) after EfficientNet's Normalization only for
    # weights="imagenet"; loading the official file by path must end up numerically the same.
    bb = M.build_backbone("EfficientNetB0", 32, weights=None)
    norm = next(layer for layer in bb.layers if isinstance(layer, keras.layers.Normalization))
    mean = np.array([0.485, 0.456, 0.406], "float32")
    var = np.array([0.229, 0.224, 0.225], "float32")  # what the h5 stores
    norm.adapt_mean.assign(mean)
    norm.adapt_variance.assign(var)
    norm.finalize_state()
    M.fold_efficientnet_std(bb)
    x = np.random.default_rng(0).uniform(0, 1, (1, 4, 4, 3)).astype("float32")
    expected = (x - mean) / np.sqrt(var) / np.sqrt(np.array([0.229, 0.224, 0.225], "float32"))
    np.testing.assert_allclose(np_(norm(x)), expected, rtol=1e-5)


# --------------------------------------------------------------------------------------------
# Errors and validation
# --------------------------------------------------------------------------------------------


def test_unknown_backbone_lists_valid_names_and_suggests():
    with pytest.raises(ValueError) as ei:
        M.get_backbone_spec("EfficientNetBO")
    msg = str(ei.value)
    assert "EfficientNetBO" in msg and "Did you mean 'EfficientNetB0'" in msg
    assert all(name in msg for name in M.BACKBONES)
    with pytest.raises(ValueError, match="Valid backbones"):
        M.build_model("NotANet", weights=None)


def test_image_size_below_minimum():
    with pytest.raises(ValueError) as ei:
        M.build_model("Xception", weights=None, image_size=64)
    msg = str(ei.value)
    assert "image_size" in msg and "Xception" in msg and "71" in msg
    with pytest.raises(ValueError, match="image_size.*InceptionV3.*75"):
        M.build_backbone("InceptionV3", 64, weights=None)


def test_build_model_argument_validation():
    with pytest.raises(ValueError, match="preprocessing"):
        small_v2(preprocessing="imagenet")
    with pytest.raises(ValueError, match="augment"):
        small_v2(augment="heavy")
    with pytest.raises(ValueError, match="pooling"):
        small_v2(backbone_kwargs={"alpha": 0.35, "pooling": "avg"})
    with pytest.raises(ValueError, match="alpah"):
        small_v2(backbone_kwargs={"alpah": 0.35})
    with pytest.raises(ValueError, match="include_preprocessing"):
        M.build_model("EfficientNetV2B0", weights=None, image_size=32, backbone_kwargs={"include_preprocessing": False})
    with pytest.raises(ValueError, match="pooling"):
        M.HeadConfig(pooling="sum")
    with pytest.raises(ValueError, match="dropout"):
        M.HeadConfig(dropout=1.0)
    with pytest.raises(ValueError, match="mode"):
        M.Preprocess("imagenet")


# --------------------------------------------------------------------------------------------
# Model anatomy, preprocessing modes, augmentation
# --------------------------------------------------------------------------------------------


def test_model_anatomy_and_options():
    model = small_v2(augment="light", head=M.HeadConfig(pooling="max", dense_units=(16, 8), dropout=0.3),
                     preprocessing="unit", num_classes=7, seed=0)
    names = [layer.name for layer in model.layers]
    assert names == ["image", "to_float", "augment", "resize", "preprocess", "backbone", "head_pool",
                     "head_dropout_0", "head_dense_0", "head_dropout_1", "head_dense_1", "head_dropout", "predictions"]
    assert model.inputs[0].dtype == "uint8" and tuple(model.inputs[0].shape) == (None, 64, 64, 3)
    assert isinstance(model.get_layer("resize"), keras.layers.Resizing)
    assert isinstance(model.get_layer("head_pool"), keras.layers.GlobalMaxPooling2D)
    assert model.get_layer("head_dense_1").units == 8 and model.get_layer("head_dropout").rate == 0.3
    assert model.output.shape[-1] == 7
    # Weights=None trains from scratch: everything trainable, BN included.
    assert all(layer.trainable for layer in model.get_layer("backbone").layers)
    assert M.count_params(model)["non_trainable"] == sum(
        math.prod(w.shape) for layer in model.get_layer("backbone").layers if isinstance(layer, BN)
        for w in (layer.moving_mean, layer.moving_variance)
    )
    d = M.describe_model(model)
    assert d["preprocessing"] == "unit" and d["expected_preprocessing"] == "tf"
    assert d["head"] == {"pooling": "max", "dense_units": [16, 8], "dropout": 0.3}
    assert d["augment"] == ["dihedral", "translate", "brightness", "contrast"]
    assert json.loads(json.dumps(d)) == d
    # At 64 px the resize step is an identity but keeps its name.
    same = M.build_model("MobileNet", weights=None, image_size=64, backbone_kwargs={"alpha": 0.25},
                         head=M.HeadConfig(dropout=0))
    assert [layer.name for layer in same.layers] == CONTRACT
    assert isinstance(same.get_layer("resize"), keras.layers.Identity)


def test_mixed_precision_keeps_float32_predictions():
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = small_v2(augment="flip", preprocessing="caffe")
        assert model.get_layer("preprocess").compute_dtype == "float16"
        probs = model(images(2), training=True)
    finally:
        keras.config.set_dtype_policy(old)
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    assert np.all(np.isfinite(np_(probs)))


def test_preprocess_modes_match_keras_reference():
    from keras.applications import imagenet_utils

    x = np.random.default_rng(2).uniform(0, 255, (3, 5, 5, 3)).astype("float32")
    for mode in ("tf", "caffe", "torch"):
        reference = imagenet_utils.preprocess_input(x.copy(), mode=mode)
        np.testing.assert_allclose(np_(M.Preprocess(mode)(x)), reference, atol=1e-3)
    np.testing.assert_allclose(np_(M.Preprocess("unit")(x)), x / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np_(M.Preprocess("none")(x)), x)
    layer = M.Preprocess.from_config(M.Preprocess("caffe", backbone="VGG16").get_config())
    assert (layer.mode, layer.backbone) == ("caffe", "VGG16")


def _d4(img: np.ndarray) -> list[np.ndarray]:
    out = []
    for t in (False, True):
        base = img.transpose(1, 0, 2) if t else img
        for fv in (False, True):
            for fh in (False, True):
                y = base[::-1] if fv else base
                out.append(y[:, ::-1] if fh else y)
    return out


def test_random_dihedral_gives_the_8_symmetries_only_in_training():
    img = np.arange(4 * 4 * 3, dtype="float32").reshape(4, 4, 3)
    batch = np.repeat(img[None], 64, axis=0)
    layer = M.RandomDihedral(seed=0)
    out = np_(layer(batch, training=True))
    syms = _d4(img)
    seen = set()
    for o in out:
        hits = [k for k, s in enumerate(syms) if np.array_equal(o, s)]
        assert hits, "output is not a symmetry of the square"
        seen.add(hits[0])
    assert len(seen) == 8
    np.testing.assert_array_equal(np_(layer(batch, training=False)), batch)
    np.testing.assert_array_equal(np_(layer(batch)), batch)
    rect = np.zeros((2, 4, 6, 3), "float32")
    assert np_(layer(rect, training=True)).shape == rect.shape  # no transpose for non-square
    assert M.RandomDihedral.from_config(layer.get_config()).seed == 0


# --------------------------------------------------------------------------------------------
# Freezing and BatchNorm
# --------------------------------------------------------------------------------------------


def _head_weight_ids(model):
    return {id(w) for layer in model.layers if layer.name.startswith("head_") or layer.name == "predictions"
            for w in layer.trainable_weights}


def test_set_trainable_policies_mobilenet_v2():
    model = small_v2(head=M.HeadConfig(dense_units=(8,)))
    bb = model.get_layer("backbone")
    names = [layer.name for layer in bb.layers]

    assert M.set_trainable(model, "block_15") is model
    start = names.index("block_15_expand")
    expected = {layer.name for layer in bb.layers[start:] if not isinstance(layer, BN)}
    assert {layer.name for layer in bb.layers if layer.trainable} == expected
    assert not any(layer.trainable for layer in bb.layers if isinstance(layer, BN))
    assert all(model.get_layer(n).trainable for n in ("head_dense_0", "predictions"))
    want = {id(w) for layer in bb.layers[start:] if not isinstance(layer, BN) for w in layer.trainable_weights}
    assert {id(w) for w in model.trainable_weights} == want | _head_weight_ids(model)

    M.set_trainable(model, "frozen")
    assert bb.trainable_weights == []
    assert {id(w) for w in model.trainable_weights} == _head_weight_ids(model)
    assert M.count_params(model)["trainable"] == 1280 * 8 + 8 + 8 * 10 + 10

    M.set_trainable(model, 7)
    assert [layer.name for layer in bb.layers if layer.trainable] == [
        layer.name for layer in bb.layers[-7:] if not isinstance(layer, BN)
    ]
    M.set_trainable(model, "all", freeze_bn=False)
    assert all(layer.trainable for layer in bb.layers)
    c = M.count_params(model)
    assert c["total"] == model.count_params() and c["trainable"] + c["non_trainable"] == c["total"]
    with pytest.raises(ValueError, match="block_16"):
        M.set_trainable(model, "block_99")
    with pytest.raises(ValueError):
        M.set_trainable(model, -1)


def test_frozen_bn_keeps_moving_stats_in_training_mode_forward():
    x = images(4)
    model = small_v2(freeze_bn=True)
    M.set_trainable(model, "all", freeze_bn=True)
    before = bn_stats(model)
    model(x, training=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn_stats(model)))
    # Control: trainable BN updates its statistics under training=True, even though the
    # backbone was called with training=False (Keras 3 lets the outer flag override it).
    M.set_trainable(model, "all", freeze_bn=False)
    model(x, training=True)
    assert not all(np.array_equal(a, b) for a, b in zip(before, bn_stats(model)))


# --------------------------------------------------------------------------------------------
# Truncation
# --------------------------------------------------------------------------------------------


def test_truncation_by_name_and_fraction():
    full = small_v2()
    bb_full = full.get_layer("backbone")
    cut = small_v2(truncate_at="block_6")
    bb_cut = cut.get_layer("backbone")
    assert M.count_params(cut)["total"] < M.count_params(full)["total"]
    assert bb_cut.layers[-1].name == "block_6_project_BN"
    assert bb_cut.outputs[0].shape[-1] == bb_full.get_layer("block_6_project_BN").output.shape[-1]
    assert M.block_names(cut)[-1] == "block_6"
    assert M.describe_model(cut)["truncated_at"] == "block_6"
    assert M.describe_model(full)["truncated_at"] is None

    whole = small_v2(truncate_at=1.0)
    assert M.count_params(whole) == M.count_params(full)
    assert whole.get_layer("backbone").layers[-1].name == bb_full.layers[-1].name == "out_relu"
    assert M.describe_model(whole)["truncated_at"] is None

    names = M.block_names("MobileNetV2")
    half = M.truncate_backbone(M.build_backbone("MobileNetV2", 32, None, alpha=0.35), 0.5)
    assert M.block_names(half)[-1] == names[math.ceil(0.5 * len(names)) - 1]
    with pytest.raises(ValueError, match="block_16"):
        small_v2(truncate_at="block_99")
    for bad in (0, 0.0, 1.5, True):
        with pytest.raises(ValueError, match="truncate_at"):
            small_v2(truncate_at=bad)
    with pytest.raises(ValueError, match="block_6"):  # cannot unfreeze a block that was cut off
        M.set_trainable(cut, "block_10")


# --------------------------------------------------------------------------------------------
# Feature cache split, saving
# --------------------------------------------------------------------------------------------


def test_split_feature_extractor_shares_the_head():
    model = small_v2(head=M.HeadConfig(dense_units=(16,), dropout=0.3), augment="flip", seed=0)
    extractor, head = M.split_feature_extractor(model)
    x = images(6)
    feats = np_(extractor(x))
    assert feats.shape == (6, 1280)
    np.testing.assert_allclose(np_(head(feats)), np_(model(x)), atol=1e-6)
    assert head.get_layer("predictions") is model.get_layer("predictions")
    head_names = ["head_dropout_0", "head_dense_0", "head_dropout", "predictions"]
    assert [layer.name for layer in head.layers[1:]] == head_names

    kernel = np_(model.get_layer("predictions").kernel).copy()
    before = np_(model(x))
    head.compile(optimizer=keras.optimizers.SGD(0.5), loss="sparse_categorical_crossentropy")
    head.fit(feats, np.arange(6) % 10, batch_size=6, epochs=2, verbose=0)
    assert not np.allclose(np_(model.get_layer("predictions").kernel), kernel)
    after = np_(model(x))
    assert not np.allclose(after, before)
    np.testing.assert_allclose(np_(head(np_(extractor(x)))), after, atol=1e-6)


def test_build_head_alone_is_the_head_build_model_puts_after_pooling():
    """Heads trained on a feature matrix (chapter 4) have the same layers as a whole model's."""
    cfg = M.HeadConfig(dense_units=(16, 8), dropout=0.3)
    _, inside = M.split_feature_extractor(M.build_small_cnn(head=cfg, filters=(8, 16)))
    alone = M.build_head(16, cfg, num_classes=10)

    def anatomy(model):
        return [(type(layer).__name__, layer.name, getattr(layer, "units", None), getattr(layer, "rate", None))
                for layer in model.layers]

    assert anatomy(alone) == anatomy(inside)
    assert alone.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    plain = M.build_head(5, M.HeadConfig(dropout=0.0), num_classes=3)
    assert [layer.name for layer in plain.layers] == ["features", "predictions"] and plain.output.shape[-1] == 3


def test_save_and_reload_keras_file(tmp_path):
    model = M.build_model(
        "MobileNetV2", weights=None, image_size=48, backbone_kwargs={"alpha": 0.35}, augment="light",
        head=M.HeadConfig(pooling="max", dense_units=(8,)), truncate_at="block_13", freeze_bn=True, seed=3,
    )
    M.set_trainable(model, "block_12")
    x = images(3)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    np.testing.assert_allclose(np_(loaded(x)), np_(model(x)), atol=1e-6)
    assert isinstance(loaded.get_layer("preprocess"), M.Preprocess)
    assert isinstance(loaded.get_layer("augment").layers[0], M.RandomDihedral)
    assert M.describe_model(loaded) == M.describe_model(model)
    assert M.describe_model(loaded)["truncated_at"] == "block_13"
    # Trainability travels with the file; frozen BN keeps its statistics when training.
    assert M.count_params(loaded) == M.count_params(model)
    before = bn_stats(loaded)
    loaded(x, training=True)
    assert all(np.array_equal(a, b) for a, b in zip(before, bn_stats(loaded)))


def test_keras_saving_skipsets_are_cached_and_saving_still_round_trips(tmp_path):
    """The models package works around Keras' never-hitting skip-set cache (see _cache_keras_saving_skipsets)."""
    from keras.src.saving import saving_lib

    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    assert "trainable_weights" in saving_lib.get_attr_skipset("Layer")
    model = M.build_model("MobileNetV2", backbone_kwargs={"alpha": 0.35}, weights=None, image_size=32)
    model.save_weights(str(tmp_path / "a.weights.h5"))
    other = M.build_model("MobileNetV2", backbone_kwargs={"alpha": 0.35}, weights=None, image_size=32)
    other.load_weights(str(tmp_path / "a.weights.h5"))
    for a, b in zip(model.weights, other.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
