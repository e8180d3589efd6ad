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


def _circles(ax):
    """The flag circles plot_comparison draws: hollow markers, the ⚠ legend entry's collection."""
    return [c for c in ax.collections if c.get_label().startswith("⚠")]


def test_comparison_circles_flagged_runs_where_they_are_drawn(tmp_path):
    df = pd.DataFrame(
        {
            "mode": ["b", "b", "a", "a", "b", "a"],  # "b" first: categories keep their order of appearance
            "init": ["x", "y", "x", "y", "y", "x"],
            "lr_finetune": [1e-4, 1e-4, 1e-3, 1e-3, 1e-2, 1e-2],
            "val_accuracy": [0.80, 0.82, 0.70, 0.71, 0.10, 0.72],
            "warnings": ["", "", "not converged", "", "chance-level; diverged", None],
        }
    )
    # bar, no hue: the circle sits on the flagged run's own dot (no jitter), the legend names the flags
    ax = saved(plots.plot_comparison(df, x="mode", y="val_accuracy"), tmp_path).axes[0]
    (c,) = _circles(ax)
    np.testing.assert_allclose(c.get_offsets(), [[1, 0.70], [0, 0.10]])  # "a" is the second group
    dots = np.concatenate([d.get_offsets() for d in ax.collections if d is not c])
    for xy in c.get_offsets():
        assert np.isclose(dots, xy).all(axis=1).any(), "every circle encloses a drawn run"
    assert "⚠ run flagged chance-level, diverged, not converged (2)" in [t.get_text() for t in ax.get_legend().get_texts()]
    # bar with hue: dodged like the bars (hue "y" is the right half of group "b")
    ax = plots.plot_comparison(df, x="mode", y="val_accuracy", hue="init").axes[0]
    (c,) = _circles(ax)
    np.testing.assert_allclose(c.get_offsets(), [[1 - 0.2, 0.70], [0 + 0.2, 0.10]])
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[:2] == ["x", "y"] and texts[-1].startswith("⚠") and ax.get_legend().get_title().get_text() == plots.axis_label("init")
    # points with hue: spread over POINT_DODGE
    ax = plots.plot_comparison(df, x="mode", y="val_accuracy", hue="init", kind="point").axes[0]
    np.testing.assert_allclose(_circles(ax)[0].get_offsets()[:, 0], [1 - plots.POINT_DODGE / 2, 0 + plots.POINT_DODGE / 2])
    # learning rates: a numeric log axis, circles at the rate itself
    ax = plots.plot_comparison(df, x="lr_finetune", y="val_accuracy", kind="point").axes[0]
    np.testing.assert_allclose(_circles(ax)[0].get_offsets(), [[1e-3, 0.70], [1e-2, 0.10]])
    # no flag, or no column: nothing circled, no ⚠ entry
    for clean in (df.assign(warnings=""), df.drop(columns="warnings")):
        ax = plots.plot_comparison(clean, x="mode", y="val_accuracy").axes[0]
        assert not _circles(ax) and ax.get_legend() is None


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



# --- One style for every figure: axis labels in words, log learning-rate axes, integer epochs ---

_SNAKE = __import__("re").compile(r"\b[a-z]+(?:_[a-z0-9]+)+\b")


def _runs_table() -> pd.DataFrame:
    """A run table with the columns the chapters plot (several seeds per configuration)."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(3):
        for i, lr in enumerate((1e-5, 1e-4, 1e-3, 1e-2)):
            rows.append(dict(
                seed=seed, lr_finetune=lr, image_size=(64, 96, 128, 160)[i], unfreeze_fraction=i / 4,
                config=("none", "dropout", "augment", "early stop")[i], block=f"block_{i}",
                candidate=f"Net{i}", backbone=f"Net{i}", init=("imagenet", "scratch")[i % 2],
                val_accuracy=0.8 + 0.02 * i + rng.normal(0, 0.005), test_accuracy=0.79 + 0.02 * i,
                train_accuracy=0.95, train_minus_test=0.16 - 0.02 * i, feature_seconds=3.0 + i,
                inference_images_per_s=100.0 * (i + 1), total_params=1e6 * (i + 1), fit_seconds=30.0 + i,
                train_images=100 * (i + 1), method=("frozen features + head", "fine-tuned")[i % 2],
            ))  # fmt: skip
    return pd.DataFrame(rows)


def _book_figures() -> list[Figure]:
    """The figures of plots.py, drawn as the chapters call them (column names as in the run tables)."""
    df = _runs_table()
    curves = pd.DataFrame([dict(epoch=e, val_accuracy=0.5 + 0.05 * e + 0.01 * s, model=m, seed=s)
                           for e in range(1, 8) for s in range(2) for m in ("frozen", "scratch")])  # fmt: skip
    hist = {"loss": [1.0, 0.7, 0.5, 0.4], "val_loss": [1.1, 0.8, 0.7, 0.7],
            "accuracy": [0.5, 0.7, 0.8, 0.85], "val_accuracy": [0.4, 0.6, 0.7, 0.72]}  # fmt: skip
    table = df.groupby("block").agg(val_mean=("val_accuracy", "mean"), val_sd=("val_accuracy", "std"),
                                    backbone_params=("total_params", "first"), images_per_s=("inference_images_per_s", "first"))  # fmt: skip
    return [
        plots.plot_comparison(df, x="lr_finetune", y="val_accuracy", kind="point"),
        plots.plot_comparison(df, x="image_size", y="val_accuracy", kind="point"),
        plots.plot_comparison(df, x="image_size", y="feature_seconds", kind="bar"),
        plots.plot_comparison(df, x="config", y="train_minus_test", kind="bar"),
        plots.plot_comparison(df, x="unfreeze_fraction", y="val_accuracy", hue="init", kind="bar"),
        plots.plot_curves(curves, y="val_accuracy", hue="model"),
        plots.plot_accuracy_vs_cost(df, x="inference_images_per_s", y="val_accuracy", label="backbone", hue="init"),
        plots.plot_accuracy_vs_cost(df, x="total_params", y="val_accuracy", label="backbone"),
        plots.plot_accuracy_curve(df, x="train_images", y="val_accuracy", hue="method"),
        plots.plot_leaderboard(df, metric="val_accuracy", label="candidate", params="total_params", speed="fit_seconds"),
        plots.plot_history(hist),
        plots.plot_learning_curves({"a": hist}),
        plots.plot_cut_tradeoff(table, tolerance=0.01, chosen="block_2"),
        plots.plot_intervals(pd.DataFrame({"diff": [0.01, -0.002], "lo": [0.0, -0.01], "hi": [0.02, 0.006]},
                                          index=["224 px − 64 px", "EfficientNetB0 − MobileNetV2"])),  # fmt: skip
    ]


def test_axis_labels_are_words_not_column_names():
    """No figure axis (or title) shows a raw snake_case column name such as ``val_accuracy``."""
    raw = []
    for fig in _book_figures():
        for ax in fig.axes:
            for text in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()):
                if _SNAKE.search(text):
                    raw.append(text)
            leg = ax.get_legend()
            if leg is not None and _SNAKE.search(leg.get_title().get_text()):
                raw.append(leg.get_title().get_text())
    assert not raw, f"raw column names on figure axes: {raw}"
    assert plots.axis_label("val_accuracy") == "validation accuracy"
    assert plots.axis_label("some_new_column") == "some new column"


def test_learning_rate_axes_are_log_and_numeric():
    df = _runs_table()
    ax = plots.plot_comparison(df, x="lr_finetune", y="val_accuracy", kind="point").axes[0]
    assert ax.get_xscale() == "log"
    # Numeric positions: 1e-5 and 1e-2 sit three decades apart, not at category slots 0..3.
    lo, hi = ax.get_xlim()
    assert lo < 1e-5 < 1e-2 < hi


def test_epoch_ticks_are_integers():
    curves = pd.DataFrame([dict(epoch=e, val_accuracy=0.5 + 0.05 * e, model="m") for e in range(1, 4)])
    hist = {"accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    for fig in (plots.plot_curves(curves), plots.plot_history(hist, metrics=("accuracy",)),
                plots.plot_learning_curves({"a": hist}, metrics=("accuracy",))):  # fmt: skip
        fig.canvas.draw()
        ax = fig.axes[0]
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), f"fractional epoch ticks {ticks}"


def test_point_labels_do_not_overlap():
    """Accuracy-vs-cost labels (chapter 5) of close points are moved apart."""
    df = pd.DataFrame({"backbone": [f"EfficientNetB{i}" for i in range(5)], "x": [100, 100.5, 101, 200, 300],
                       "val_accuracy": [0.9, 0.9005, 0.901, 0.95, 0.99]})  # fmt: skip
    fig = plots.plot_accuracy_vs_cost(df, x="x", y="val_accuracy", label="backbone", logx=False)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text().startswith("EfficientNet")]
    assert len(boxes) == 5
    overlaps = [(i, j) for i in range(5) for j in range(i + 1, 5) if boxes[i].overlaps(boxes[j])]
    assert not overlaps, f"point labels overlap: {overlaps}"


def test_intervals_plot(tmp_path):
    t = pd.DataFrame({"arm": ["a", "b"], "diff": [0.01, -0.002], "lo": [0.0, -0.01], "hi": [0.02, 0.006]})
    fig = saved(plots.plot_intervals(t, label="arm", xlabel="accuracy difference (95% interval)"), tmp_path)
    ax = fig.axes[0]
    pos = {t.get_text(): y for t, y in zip(ax.get_yticklabels(), ax.get_yticks())}
    assert pos["a"] > pos["b"], "the table's first row is drawn on top"
    assert ax.get_xlabel() == "accuracy difference (95% interval)"
    with pytest.raises(ValueError, match="must contain"):
        plots.plot_intervals(t.assign(lo=[0.05, -0.01]), label="arm")
    with pytest.raises(ValueError, match="not in the table"):
        plots.plot_intervals(t, estimate="nope")


def test_gradcam_states_its_resolution_limit():
    imgs = np.zeros((2, 64, 64, 3), np.uint8)
    maps = np.zeros((2, 64, 64), np.float32)
    assert "2×2 feature map" in plots.plot_gradcam(imgs, maps, map_cells=(2, 2))._suptitle.get_text()
    assert "feature map" not in plots.plot_gradcam(imgs, maps, map_cells=(7, 7))._suptitle.get_text()
