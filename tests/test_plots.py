"""Tests for eurosat_lib.plots: each figure has the expected panels/artists and saves as PNG."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # headless; must precede pyplot

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import QuadMesh
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from eurosat_lib import evaluation as ev
from eurosat_lib import plots
from eurosat_lib.data import CLASS_NAMES, make_synthetic


@pytest.fixture(scope="module")
def data():
    return make_synthetic(n_per_class=8, seed=0)


@pytest.fixture(scope="module")
def preds(data):
    """Noisy but mostly right probabilities for ``data``."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(data), 10))
    logits[np.arange(len(data)), data.labels] += 2.5
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def saved(fig, tmp_path, name="fig.png"):
    assert isinstance(fig, Figure)
    path = tmp_path / name
    fig.savefig(path)
    assert path.stat().st_size > 1000 and path.read_bytes()[:4] == b"\x89PNG"
    return fig


def n_bars(ax):
    return sum(len(c) for c in ax.containers if hasattr(c, "patches"))


def image_axes(fig):
    return [a for a in fig.axes if a.images]


def test_class_balance(data, tmp_path):
    fig = saved(plots.plot_class_balance(data), tmp_path)
    (ax,) = fig.axes
    assert n_bars(ax) == 10 * 3  # stacked train/val/test
    assert [t.get_text() for t in ax.get_yticklabels()] == list(CLASS_NAMES)[::-1]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"train", "val", "test"}
    fig = saved(plots.plot_class_balance({"a": 3, "b": 5}), tmp_path)
    assert n_bars(fig.axes[0]) == 2
    fig, ax = plt.subplots()
    assert plots.plot_class_balance(np.arange(10) + 1, ax=ax) is fig and n_bars(ax) == 10
    with pytest.raises(ValueError, match="one number per class"):
        plots.plot_class_balance([1, 2, 3])


def test_sample_grid(data, tmp_path):
    fig = saved(plots.plot_sample_grid(data, per_class=3, seed=1), tmp_path)
    assert len(fig.axes) == 30 and len(image_axes(fig)) == 30
    assert [fig.axes[3 * c].get_ylabel() for c in range(10)] == list(CLASS_NAMES)
    # Row c shows class c images.
    first = fig.axes[3 * 4].images[0].get_array()
    assert any(np.array_equal(first, img) for img in data.images[data.labels == 4])
    w, h = fig.get_size_inches()
    assert 4 <= w <= 12 and fig.dpi == 100


def test_channel_stats(data, tmp_path):
    fig = saved(plots.plot_channel_stats(data), tmp_path)
    ax_hist, ax_cls = fig.axes
    assert len(ax_hist.patches) == 3  # one histogram per channel
    assert n_bars(ax_cls) == 10 * 3
    assert len(ax_cls.lines) == 30  # sd error bars


def test_history_dict_and_phases(tmp_path):
    h = {"loss": [1.0, 0.7, 0.5], "val_loss": [1.1, 0.8, 0.7], "accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    fig = saved(plots.plot_history(h), tmp_path)
    assert len(fig.axes) == 2 and [a.get_title() for a in fig.axes] == ["loss", "accuracy"]
    assert all(len(a.lines) == 2 for a in fig.axes)
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [1, 2, 3])

    phases = [h, {"name": "fine-tuning", "history": {"loss": [0.4, 0.3], "val_loss": [0.6, 0.55]}}]
    fig = saved(plots.plot_history(phases, metrics=("loss",)), tmp_path)
    (ax,) = fig.axes
    assert len(ax.lines[0].get_xdata()) == 5
    vlines = [l for l in ax.lines if list(l.get_xdata()) == [3.5, 3.5]]
    assert len(vlines) == 1
    assert any("fine-tuning starts" in t.get_text() for t in ax.texts)

    fig = plots.plot_history(h, metrics=("loss",), phase_boundaries=[1])
    assert any("fine-tuning" in t.get_text() for t in fig.axes[0].texts)
    with pytest.raises(ValueError, match="available"):
        plots.plot_history(h, metrics=("auc",))


def test_confusion_matrix(data, preds, tmp_path):
    cm = ev.evaluate_predictions(data.labels, preds)["confusion_matrix"]
    fig = saved(plots.plot_confusion_matrix(cm, CLASS_NAMES), tmp_path)
    ax = fig.axes[0]
    mesh = next(c for c in ax.collections if isinstance(c, QuadMesh))
    values = np.asarray(mesh.get_array()).reshape(10, 10)
    assert values.size == 100
    np.testing.assert_allclose(values.sum(1), 1.0)  # rows normalised
    assert len(ax.texts) == 100
    fig = plots.plot_confusion_matrix(cm, normalize=False)
    assert np.asarray(next(c for c in fig.axes[0].collections if isinstance(c, QuadMesh)).get_array()).sum() == len(data)
    with pytest.raises(ValueError, match="10x10"):
        plots.plot_confusion_matrix(np.eye(3))


def test_per_class(data, preds, tmp_path):
    m = ev.evaluate_predictions(data.labels, preds)
    fig = saved(plots.plot_per_class(m), tmp_path)
    ax = fig.axes[0]
    assert n_bars(ax) == 30
    heights = sorted(round(p.get_height(), 6) for c in ax.containers for p in c.patches)
    expected = sorted(round(v[k], 6) for v in m["per_class"].values() for k in ("precision", "recall", "f1"))
    assert heights == expected
    assert n_bars(plots.plot_per_class(m["per_class"]).axes[0]) == 30


def test_mistakes(data, preds, tmp_path):
    idx = ev.most_confident_mistakes(data.labels, preds, k=5)
    assert len(idx) == 5
    fig = saved(plots.plot_mistakes(data.images, data.labels, preds, idx, CLASS_NAMES, ncols=3), tmp_path)
    shown = image_axes(fig)
    assert len(fig.axes) == 6 and len(shown) == 5
    i = idx[0]
    pred = preds[i].argmax()
    assert shown[0].get_title() == f"{CLASS_NAMES[data.labels[i]]} →\n{CLASS_NAMES[pred]} ({preds[i, pred]:.2f})"


def test_reliability(data, preds, tmp_path):
    fig = saved(plots.plot_reliability(data.labels, preds), tmp_path)
    ax = fig.axes[0]
    ece = ev.expected_calibration_error(data.labels, preds)
    assert f"ECE = {ece:.3f}" in ax.get_title()
    used = int((ev.reliability_table(data.labels, preds)["count"] > 0).sum())
    assert len([p for p in ax.patches if isinstance(p, Rectangle)]) == 2 * used  # accuracy + gap bars


def test_comparison(tmp_path):
    df = pd.DataFrame(
        {
            "backbone": ["a", "a", "a", "b", "b", "b"],
            "head": ["x", "y", "x", "y", "x", "y"],
            "test_accuracy": [0.8, 0.82, 0.81, 0.9, 0.91, 0.93],
        }
    )
    fig = saved(plots.plot_comparison(df, x="backbone", y="test_accuracy"), tmp_path)
    ax = fig.axes[0]
    assert n_bars(ax) == 2
    np.testing.assert_allclose(sorted(p.get_height() for p in ax.containers[0].patches), [0.81, 0.9133333])
    assert sum(len(c.get_offsets()) for c in ax.collections) == 6  # one dot per run
    assert "sd" in ax.get_title()
    fig = saved(plots.plot_comparison(df, x="backbone", y="test_accuracy", hue="head", kind="point"), tmp_path)
    assert fig.axes[0].get_legend() is not None
    assert n_bars(plots.plot_comparison(df, x="backbone", y="test_accuracy", hue="head").axes[0]) == 4
    with pytest.raises(ValueError, match="kind"):
        plots.plot_comparison(df, x="backbone", y="test_accuracy", kind="violin")
    with pytest.raises(ValueError, match="not in the table"):
        plots.plot_comparison(df, x="model", y="test_accuracy")


def test_leaderboard(tmp_path):
    df = pd.DataFrame(
        {
            "run": ["resnet/s0", "resnet/s1", "mobilenet/s0", "scratch/s0"],
            "model": ["resnet", "resnet", "mobilenet", "scratch"],
            "test_accuracy": [0.97, 0.96, 0.95, 0.85],
            "total_params": [23_600_000, 23_600_000, 2_300_000, 120_000],
            "total_seconds": [600.0, 620.0, 200.0, 90.0],
        }
    )
    fig = saved(plots.plot_leaderboard(df), tmp_path)
    ax = fig.axes[0]
    assert n_bars(ax) == 4
    fig = saved(plots.plot_leaderboard(df, label="model"), tmp_path)
    ax = fig.axes[0]
    assert n_bars(ax) == 3
    assert [t.get_text() for t in ax.get_yticklabels()] == ["scratch", "mobilenet", "resnet"]  # best on top
    notes = [t.get_text() for t in ax.texts]
    assert any("23.6M params" in t and "10.2 min" in t and "n=2" in t for t in notes)
    assert any("120.0k params" in t for t in notes)
    # gather_runs output works directly, with or without optional columns.
    assert n_bars(plots.plot_leaderboard(df[["run", "test_accuracy"]]).axes[0]) == 4


def test_gradcam(data, tmp_path):
    imgs = data.images[:4]
    heat = np.random.default_rng(0).random((4, 64, 64)).astype(np.float32)
    fig = saved(plots.plot_gradcam(imgs, heat, titles=list("abcd"), ncols=3), tmp_path)
    shown = image_axes(fig)
    assert len(shown) == 4 and all(len(a.images) == 2 for a in shown)
    assert [a.get_title() for a in shown] == list("abcd")
    with pytest.raises(ValueError, match="must match"):
        plots.plot_gradcam(imgs, heat[:3])

