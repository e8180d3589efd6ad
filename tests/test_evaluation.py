"""Tests for eurosat_lib.evaluation (metrics, calibration) and eurosat_lib.gradcam (Grad-CAM)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from eurosat_lib import evaluation as ev
from eurosat_lib import gradcam
from eurosat_lib.data import CLASS_NAMES, make_synthetic

ABC = ("a", "b", "c")


def onehot_probs(pred, k, conf=1.0):
    """Rows putting ``conf`` on ``pred`` and the rest spread evenly."""
    pred = np.asarray(pred)
    conf = np.broadcast_to(np.asarray(conf, dtype=float), pred.shape)
    p = np.repeat(((1 - conf) / (k - 1))[:, None], k, axis=1)
    p[np.arange(len(pred)), pred] = conf
    return p


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def test_metrics_match_hand_computed_example():
    y_true = [0, 0, 1, 1, 2, 2]
    y_pred = [0, 1, 1, 1, 2, 0]
    m = ev.evaluate_predictions(y_true, onehot_probs(y_pred, 3, 0.8), class_names=ABC)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    pc = m["per_class"]
    assert pc["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert pc["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert pc["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # equal supports
    assert m["nll"] == pytest.approx(-(4 * math.log(0.8) + 2 * math.log(0.1)) / 6)
    assert m["n"] == 6
    # ECE: all confidences 0.8 in one bin, accuracy 2/3.
    assert m["ece"] == pytest.approx(abs(0.8 - 4 / 6))
    # Plain JSON, no numpy types.
    assert json.loads(json.dumps(m)) == m


def test_metrics_default_class_names_and_full_confusion_matrix():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=50)
    m = ev.evaluate_predictions(rng.integers(0, 3, 50), p)  # classes 3..9 never true
    assert list(m["per_class"]) == list(CLASS_NAMES)
    assert np.array(m["confusion_matrix"]).shape == (10, 10)
    assert np.array(m["confusion_matrix"]).sum() == 50


def test_ece_zero_when_perfectly_calibrated():
    # Confidence 0.75 and exactly 3 of 4 right; and confidence 1.0 always right.
    y_prob = onehot_probs([0, 1, 1, 0], 2, 0.75)
    assert ev.expected_calibration_error([0, 1, 1, 1], y_prob) == pytest.approx(0.0, abs=1e-12)
    assert ev.expected_calibration_error([2, 0, 1], np.eye(3)[[2, 0, 1]]) == 0.0


def test_ece_hand_computed():
    # Two bins used: conf 0.95 (1 of 2 right, gap 0.45) and 0.65 (2 of 2 right, gap 0.35).
    y_prob = onehot_probs([0, 0, 1, 1], 2, [0.95, 0.95, 0.65, 0.65])
    y_true = [0, 1, 1, 1]
    assert ev.expected_calibration_error(y_true, y_prob) == pytest.approx(0.5 * 0.45 + 0.5 * 0.35)
    # One bin: |accuracy - mean confidence| = |0.75 - 0.8|.
    assert ev.expected_calibration_error(y_true, y_prob, n_bins=1) == pytest.approx(0.05)


def test_ece_matches_reference_loop():
    """Independent implementation of Guo et al.'s definition (bins lower < conf <= upper)."""
    rng = np.random.default_rng(1)
    y_prob = rng.dirichlet(np.full(10, 0.3), size=500)
    y_true = rng.integers(0, 10, 500)
    conf, correct = y_prob.max(1), y_prob.argmax(1) == y_true
    edges = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ref += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    assert ev.expected_calibration_error(y_true, y_prob) == pytest.approx(ref)


def test_reliability_table():
    y_prob = onehot_probs([0, 0, 1, 1], 2, [0.95, 0.95, 0.65, 0.65])
    t = ev.reliability_table([0, 1, 1, 1], y_prob, n_bins=10)
    assert list(t.columns) == ["bin", "lower", "upper", "confidence", "accuracy", "count"]
    assert len(t) == 10 and t["count"].sum() == 4
    assert t.loc[9, "count"] == 2 and t.loc[9, "accuracy"] == 0.5 and t.loc[9, "confidence"] == pytest.approx(0.95)
    assert t.loc[6, "count"] == 2 and t.loc[6, "accuracy"] == 1.0
    assert t.loc[0, "count"] == 0 and np.isnan(t.loc[0, "accuracy"])


def test_most_confident_mistakes_order():
    y_true = np.array([0, 0, 0, 0, 0, 1])
    y_prob = onehot_probs([1, 0, 1, 1, 1, 1], 2, [0.6, 0.99, 0.9, 0.7, 0.9, 0.99])
    # Wrong: 0 (0.6), 2 (0.9), 3 (0.7), 4 (0.9); ties keep dataset order.
    assert ev.most_confident_mistakes(y_true, y_prob).tolist() == [2, 4, 3, 0]
    assert ev.most_confident_mistakes(y_true, y_prob, k=2).tolist() == [2, 4]
    assert ev.most_confident_mistakes([1, 0], onehot_probs([1, 0], 2, 0.9)).size == 0


@pytest.mark.parametrize(
    "y_true, y_prob, match",
    [
        ([0, 1], [[0.5, 0.4], [0.5, 0.5]], "sum to 1"),
        ([0, 1], [0.5, 0.5], "2-D"),
        ([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]], "3 labels but y_prob has 2 rows"),
        ([0, 2], [[0.5, 0.5], [0.5, 0.5]], r"in \[0, 1\]"),
        ([0, -1], [[0.5, 0.5], [0.5, 0.5]], r"in \[0, 1\]"),
        ([[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]], "one-hot"),
        ([0.5, 1], [[0.5, 0.5], [0.5, 0.5]], "integer"),
        ([0, 1], [[np.nan, 0.5], [0.5, 0.5]], "NaN"),
        ([0, 1], [[2.0, -1.0], [0.5, 0.5]], "logits"),
        ([], np.zeros((0, 2)), "zero samples"),
    ],
)
def test_bad_inputs_raise_clearly(y_true, y_prob, match):
    with pytest.raises(ValueError, match=match):
        ev.evaluate_predictions(y_true, y_prob, class_names=("a", "b"))


def test_class_names_must_match_columns():
    with pytest.raises(ValueError, match="3 columns but there are 10 class names"):
        ev.evaluate_predictions([0], [[1.0, 0.0, 0.0]])


def test_float32_softmax_rows_accepted():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(100, 10)).astype(np.float32)
    p = (np.exp(z) / np.exp(z).sum(1, keepdims=True)).astype(np.float32)
    assert ev.evaluate_predictions(rng.integers(0, 10, 100), p)["n"] == 100


# --------------------------------------------------------------------------------------------
# Models: prediction and Grad-CAM on a tiny stand-in following the eurosat_lib.models contract
# --------------------------------------------------------------------------------------------

STANDIN_SOURCE = '''
def build_standin(num_classes=10, hidden=False):
    """uint8 "image" -> Rescaling -> nested "backbone" -> head_pool -> [head_dense_0] -> predictions."""
    import keras
    from keras import layers

    inp = keras.Input((64, 64, 3), dtype="uint8", name="image")
    x = layers.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(inp)
    bb_in = keras.Input((64, 64, 3))
    y = layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(bb_in)
    y = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(y)
    features = keras.Model(bb_in, y, name="backbone")(x)
    h = layers.GlobalAveragePooling2D(name="head_pool")(features)
    if hidden:
        h = layers.Dense(8, activation="relu", name="head_dense_0")(h)
        h = layers.Dropout(0.3, name="head_dropout_0")(h)
    h = layers.Dropout(0.2, name="head_dropout")(h)
    out = layers.Dense(num_classes, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="standin")


def reference_cam(model, images, classes):
    """Class activation map: for GAP + Dense, Grad-CAM of the logit equals CAM exactly."""
    import numpy as np
    from keras import ops

    feats = ops.convert_to_numpy(model.get_layer("backbone")(images.astype("float32") / 127.5 - 1.0))
    kernel = ops.convert_to_numpy(model.get_layer("predictions").kernel)
    cam = np.maximum(np.einsum("bhwc,cb->bhw", feats, kernel[:, classes]), 0)
    cam = ops.convert_to_numpy(ops.image.resize(cam[..., None], images.shape[1:3]))[..., 0]
    cam = np.maximum(cam, 0)
    peak = cam.max(axis=(1, 2), keepdims=True)
    return np.where(peak > 0, cam / np.where(peak > 0, peak, 1), 0)  # no evidence: all zeros
'''
exec(STANDIN_SOURCE)


@pytest.fixture(scope="module")
def keras_mod():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    return keras


def test_predict_and_evaluate_model(keras_mod):
    data = make_synthetic(n_per_class=3)
    model = build_standin()
    y_prob = ev.predict_proba(model, data.images, batch_size=8)
    assert y_prob.shape == (30, 10) and np.allclose(y_prob.sum(1), 1, atol=1e-5)
    metrics, y_prob2 = ev.evaluate_model(model, data)
    assert metrics["n"] == 30 and np.allclose(y_prob, y_prob2, atol=1e-6)


def test_grad_cam_equals_cam_for_gap_dense_head(keras_mod):
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    model = build_standin(num_classes=4)
    pred = model.predict(images, verbose=0).argmax(1)
    heat = gradcam.grad_cam(model, images)
    assert heat.shape == (5, 64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1
    np.testing.assert_allclose(heat, reference_cam(model, images, pred), atol=1e-4)
    # Explicit classes (one int, or one per image) and a single unbatched image.
    np.testing.assert_allclose(gradcam.grad_cam(model, images, class_index=2), reference_cam(model, images, [2] * 5), atol=1e-4)
    np.testing.assert_allclose(
        gradcam.grad_cam(model, images, class_index=[0, 1, 2, 3, 0]), reference_cam(model, images, [0, 1, 2, 3, 0]), atol=1e-4
    )
    assert gradcam.grad_cam(model, images[0]).shape == (1, 64, 64)
    with pytest.raises(ValueError, match="class_index"):
        gradcam.grad_cam(model, images, class_index=7)


def test_grad_cam_with_hidden_head_and_batches(keras_mod):
    images = np.random.default_rng(1).integers(0, 256, (7, 64, 64, 3), dtype=np.uint8)
    model = build_standin(hidden=True)
    heat = gradcam.grad_cam(model, images, batch_size=3)
    assert heat.shape == (7, 64, 64) and 0 <= heat.min() and heat.max() <= 1
    np.testing.assert_allclose(heat, gradcam.grad_cam(model, images, batch_size=64), atol=1e-5)


def test_grad_cam_rejects_models_outside_the_contract(keras_mod):
    from keras import layers

    inp = keras_mod.Input((64, 64, 3), dtype="uint8", name="image")
    out = layers.Dense(3, activation="softmax")(layers.GlobalAveragePooling2D()(layers.Rescaling(1 / 255)(inp)))
    with pytest.raises(ValueError, match="'backbone'"):
        gradcam.grad_cam(keras_mod.Model(inp, out), np.zeros((1, 64, 64, 3), np.uint8))


def _quadrant_task(n, rng):
    """Grey noise everywhere; only the top-left quadrant carries a red/green/blue tint (the class).

    The tint is weak per pixel (±30-60 against noise sd 30) but spans a quarter of the image,
    so the tiny stand-in learns it in a few seconds on 2 CPU cores (checked over 8 seeds).
    """
    tint = np.array([[60, -30, -30], [-30, 60, -30], [-30, -30, 60]], dtype=np.float64)
    labels = rng.integers(0, 3, n)
    images = rng.normal(128, 30, (n, 64, 64, 1)).repeat(3, axis=-1)
    images[:, :32, :32] += tint[labels][:, None, None, :]
    return np.clip(images, 0, 255).astype(np.uint8), labels


def test_grad_cam_highlights_the_informative_quadrant(keras_mod):
    keras_mod.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x_train, y_train = _quadrant_task(192, rng)
    x_test, y_test = _quadrant_task(30, rng)
    model = build_standin(num_classes=3)
    model.compile(optimizer=keras_mod.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=5, batch_size=8, verbose=0)
    y_prob = ev.predict_proba(model, x_test)
    assert ev.evaluate_predictions(y_test, y_prob, class_names=("red", "green", "blue"))["accuracy"] >= 0.9
    heat = gradcam.grad_cam(model, x_test, class_index=y_test)
    total = heat.sum(axis=(1, 2))
    assert (total > 0).all()
    # Share of each heatmap's mass in the informative quadrant; chance would be 0.25.
    share = heat[:, :32, :32].sum(axis=(1, 2)) / total
    assert np.median(share) > 0.8 and share.min() > 0.5, share


@pytest.mark.slow  # ~15-20 s: a fresh interpreter, and JAX compiles every initializer on first use
def test_grad_cam_on_jax_backend(tmp_path):
    """The backend branch for JAX, in a fresh interpreter (the backend is fixed per process)."""
    pytest.importorskip("jax")
    script = tmp_path / "jax_cam.py"
    script.write_text(
        STANDIN_SOURCE
        + textwrap.dedent(
            """
            import numpy as np, keras
            from eurosat_lib.gradcam import grad_cam
            assert keras.backend.backend() == "jax"
            keras.utils.set_random_seed(0)
            images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
            model = build_standin(num_classes=3)
            pred = model.predict(images, verbose=0).argmax(1)
            np.testing.assert_allclose(grad_cam(model, images), reference_cam(model, images, pred), atol=1e-4)
            print("JAX-OK")
            """
        )
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "JAX-OK" in proc.stdout, proc.stderr[-3000:]
