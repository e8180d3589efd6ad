"""Figures for the book: data, training curves, errors, calibration, comparisons, Grad-CAM.

Every function returns the matplotlib ``Figure``; those that draw one panel accept ``ax=`` to
draw into an existing figure. Nothing calls ``plt.show()`` or chooses a backend — notebooks
display figures inline, scripts ``fig.savefig(...)``. Figures are pyplot-managed, so in a
notebook write ``fig = plot_...(...)`` (or end the line with ``;``) to show each once.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .data import CLASS_NAMES, EuroSAT
from .evaluation import combine_history, expected_calibration_error, reliability_table

__all__ = [
    "plot_channel_stats",
    "plot_class_balance",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_gradcam",
    "plot_history",
    "plot_leaderboard",
    "plot_mistakes",
    "plot_per_class",
    "plot_reliability",
    "plot_sample_grid",
]

#: Screen/book resolution; savefig(dpi=...) can raise it for print.
DPI = 100
_CHANNELS = ("red", "green", "blue")


def _new_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(figsize=figsize, dpi=DPI, layout="constrained")
    return fig, ax


def _image_grid(n_rows: int, n_cols: int, cell: float = 1.1, extra_w: float = 0.0, extra_h: float = 0.0) -> tuple[Figure, np.ndarray]:
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(n_cols * cell + extra_w, n_rows * cell + extra_h),
        dpi=DPI,
        squeeze=False,
        layout="constrained",
    )
    for a in axes.flat:
        a.set_xticks([])
        a.set_yticks([])
    return fig, axes


def _human(n: float) -> str:
    """4_200_000 -> '4.2M' for compact annotations."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:.0f}"


def _duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"


# --------------------------------------------------------------------------------------------
# The data
# --------------------------------------------------------------------------------------------


def plot_class_balance(
    data_or_counts: EuroSAT | Mapping[str, int] | Sequence[int], ax: Axes | None = None
) -> Figure:
    """Images per class as horizontal bars; a ``EuroSAT`` with a split is stacked by split."""
    fig, ax = _new_ax(ax, (8, 4.5))
    if isinstance(data_or_counts, EuroSAT):
        data = data_or_counts
        names = list(data.class_names)
        if data.split is not None:
            table = pd.crosstab(
                pd.Categorical([names[i] for i in data.labels], categories=names),
                pd.Categorical(data.split, categories=[s for s in ("train", "val", "test") if s in set(data.split)]),
                dropna=False,
            )
        else:
            table = pd.DataFrame({"images": data.class_counts()}).reindex(names)
    elif isinstance(data_or_counts, Mapping):
        table = pd.DataFrame({"images": pd.Series(dict(data_or_counts), dtype=float)})
    else:
        counts = np.asarray(data_or_counts)
        if counts.ndim != 1 or counts.shape[0] != len(CLASS_NAMES):
            raise ValueError(f"counts must be one number per class ({len(CLASS_NAMES)}), got shape {counts.shape}")
        table = pd.DataFrame({"images": counts}, index=list(CLASS_NAMES))
    # Reverse so the first class is at the top, matching the reading order of other figures.
    table = table.iloc[::-1]
    left = np.zeros(len(table))
    colors = sns.color_palette("deep", len(table.columns))
    for col, color in zip(table.columns, colors):
        ax.barh(table.index.astype(str), table[col].to_numpy(), left=left, color=color, label=str(col))
        left += table[col].to_numpy(dtype=float)
    for y, total in enumerate(left):
        ax.text(total, y, f" {total:,.0f}", va="center", fontsize=8)
    ax.set_xlabel("images")
    ax.set_xlim(0, left.max() * 1.12 if left.size else 1)
    ax.set_title("Images per class")
    if len(table.columns) > 1:
        ax.legend(title="split", loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    sns.despine(ax=ax)
    return fig


def plot_sample_grid(data: EuroSAT, per_class: int = 6, seed: int = 0) -> Figure:
    """``per_class`` random images of each class; one row per class."""
    rng = np.random.default_rng(seed)
    k = data.num_classes
    fig, axes = _image_grid(k, per_class, cell=1.0, extra_w=1.6)
    for c in range(k):
        idx = np.flatnonzero(data.labels == c)
        pick = rng.choice(idx, size=min(per_class, idx.size), replace=False) if idx.size else []
        for j in range(per_class):
            a = axes[c, j]
            if j < len(pick):
                a.imshow(data.images[pick[j]], interpolation="nearest")
            else:
                a.set_axis_off()
        axes[c, 0].set_ylabel(data.class_names[c], rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(f"{per_class} random images per class")
    return fig


def plot_channel_stats(data: EuroSAT, max_images: int = 2000, seed: int = 0) -> Figure:
    """Left: R/G/B intensity histograms. Right: per-class channel means ± standard deviation.

    At most ``max_images`` random images are used, which keeps it fast on the full dataset
    while the statistics stay accurate to well under one intensity level.
    """
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data), size=min(max_images, len(data)), replace=False))
    images = np.asarray(data.images[idx])
    labels = data.labels[idx]
    fig, (ax_hist, ax_cls) = plt.subplots(1, 2, figsize=(10, 4), dpi=DPI, layout="constrained",
                                          gridspec_kw={"width_ratios": [1, 1.4]})
    bins = np.arange(257)
    for ch, color in enumerate(_CHANNELS):
        counts = np.bincount(images[..., ch].ravel(), minlength=256)
        ax_hist.stairs(counts / counts.sum(), bins, color=color, label=color, alpha=0.8)
    ax_hist.set_xlabel("pixel value")
    ax_hist.set_ylabel("fraction of pixels")
    ax_hist.set_title("Channel histograms")
    ax_hist.legend(fontsize=8)
    # Per-image channel means first: the spread is then between images, which is what
    # distinguishes classes, not within-image texture.
    per_image = images.reshape(len(images), -1, 3).mean(axis=1)
    rows = [
        {"class": data.class_names[c], "channel": _CHANNELS[ch], "mean": per_image[i, ch]}
        for i, c in enumerate(labels)
        for ch in range(3)
    ]
    df = pd.DataFrame(rows)
    present = [n for n in data.class_names if n in set(df["class"])]
    sns.barplot(df, x="class", y="mean", hue="channel", order=present, hue_order=list(_CHANNELS),
                palette=list(_CHANNELS), errorbar="sd", ax=ax_cls, alpha=0.8)
    ax_cls.set_xlabel("")
    ax_cls.set_ylabel("mean pixel value (± sd over images)")
    ax_cls.set_title("Channel means per class")
    ax_cls.tick_params(axis="x", rotation=45)
    for label in ax_cls.get_xticklabels():
        label.set_ha("right")
    ax_cls.legend(fontsize=8, title=None, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    sns.despine(fig=fig)
    return fig


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


def plot_history(
    history: Any,
    metrics: Sequence[str] = ("loss", "accuracy"),
    phase_boundaries: Sequence[int] | None = None,
) -> Figure:
    """Training (solid) and validation (dashed) curves, one panel per metric.

    ``history``: Keras ``History``, dict of lists or list of phase dicts (see
    :func:`eurosat_lib.evaluation.combine_history`). Phase starts — e.g. where fine-tuning
    began — are drawn as vertical lines; pass ``phase_boundaries`` (epochs completed before each
    new phase) to override the ones derived from a list of phases.
    """
    merged, boundaries, names = combine_history(history)
    if phase_boundaries is not None:
        boundaries = [int(b) for b in phase_boundaries]
        if len(names) != len(boundaries) + 1:
            names = [f"phase {i + 1}" for i in range(len(boundaries) + 1)]
    if len(boundaries) == 1 and names[1] == "phase 2":
        names = [names[0], "fine-tuning"]  # the book's usual two phases: head, then fine-tuning
    missing = [m for m in metrics if m not in merged and f"val_{m}" not in merged]
    if missing:
        raise ValueError(f"history has no {missing}; available: {sorted(merged)}")
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics) + 1, 3.8), dpi=DPI,
                             squeeze=False, layout="constrained")
    for ax, metric in zip(axes[0], metrics):
        for key, style, label in ((metric, "-", "train"), (f"val_{metric}", "--", "validation")):
            if key in merged:
                y = np.asarray(merged[key], dtype=float)
                ax.plot(np.arange(1, len(y) + 1), y, style, marker="o", markersize=3, label=label)
        for i, b in enumerate(boundaries):
            # Epoch b is the last of the previous phase; the line sits between it and b + 1.
            ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1.2)
            ax.annotate(f"{names[i + 1]} starts", xy=(b + 0.5, 1.0), xycoords=("data", "axes fraction"),
                        xytext=(3, -3), textcoords="offset points", fontsize=8, va="top", color="grey")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.legend(fontsize=8)
    sns.despine(fig=fig)
    return fig


# --------------------------------------------------------------------------------------------
# Errors and calibration
# --------------------------------------------------------------------------------------------


def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str] = CLASS_NAMES, normalize: bool = True, ax: Axes | None = None
) -> Figure:
    """Confusion matrix heatmap (rows = true class). ``normalize`` shows row fractions (recall)."""
    cm = np.asarray(cm, dtype=float)
    k = len(class_names)
    if cm.shape != (k, k):
        raise ValueError(f"confusion matrix must be {k}x{k} for {k} class names, got shape {cm.shape}")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        values = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
        fmt, vmax = ".2f", 1.0
    else:
        values, fmt, vmax = cm.astype(int), "d", None
    fig, ax = _new_ax(ax, (8, 6.8))
    sns.heatmap(values, annot=True, fmt=fmt, cmap="Blues", vmin=0, vmax=vmax, square=True,
                xticklabels=class_names, yticklabels=class_names, annot_kws={"fontsize": 7},
                cbar_kws={"shrink": 0.8}, ax=ax)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("Confusion matrix" + (" (fraction of each true class)" if normalize else " (counts)"))
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_ha("right")
    return fig


def plot_per_class(metrics: Mapping[str, Any], ax: Axes | None = None) -> Figure:
    """Precision, recall and F1 per class from :func:`evaluate_predictions` (or its ``per_class``)."""
    per_class = metrics.get("per_class", metrics)
    df = pd.DataFrame(
        [{"class": name, "metric": m, "value": v[m]} for name, v in per_class.items() for m in ("precision", "recall", "f1")]
    )
    fig, ax = _new_ax(ax, (10, 4))
    sns.barplot(df, x="class", y="value", hue="metric", order=list(per_class), ax=ax)
    lo = max(0.0, float(df["value"].min()) - 0.05)
    ax.set_ylim(lo if lo > 0.5 else 0.0, 1.0)  # zoom in when every class is good
    ax.set_xlabel("")
    ax.set_ylabel("score")
    ax.set_title("Per-class precision, recall and F1")
    ax.tick_params(axis="x", rotation=45)
    for label in ax.get_xticklabels():
        label.set_ha("right")
    ax.legend(fontsize=8, title=None, loc="lower right")
    sns.despine(ax=ax)
    return fig


def plot_mistakes(
    data_images: np.ndarray,
    y_true: Any,
    y_prob: Any,
    indices: Sequence[int],
    class_names: Sequence[str] = CLASS_NAMES,
    ncols: int = 8,
) -> Figure:
    """Images at ``indices``, each titled ``true → predicted (confidence)``."""
    indices = np.asarray(indices, dtype=int)
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob)
    n = max(len(indices), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = _image_grid(nrows, ncols, cell=1.35, extra_h=0.4)
    for a, i in zip(axes.flat, indices):
        pred = int(y_prob[i].argmax())
        a.imshow(data_images[i], interpolation="nearest")
        a.set_title(f"{class_names[int(y_true[i])]} →\n{class_names[pred]} ({y_prob[i, pred]:.2f})", fontsize=7)
    for a in axes.flat[len(indices):]:
        a.set_axis_off()
    fig.suptitle("true → predicted (confidence)")
    return fig


def plot_reliability(y_true: Any, y_prob: Any, n_bins: int = 15, ax: Axes | None = None) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, ECE in the title."""
    table = reliability_table(y_true, y_prob, n_bins)
    ece = expected_calibration_error(y_true, y_prob, n_bins)
    fig, ax = _new_ax(ax, (5.5, 5))
    width = table["upper"] - table["lower"]
    used = table["count"] > 0
    ax.bar(table["lower"][used], table["accuracy"][used], width=width[used], align="edge",
           edgecolor="black", linewidth=0.5, color="tab:blue", label="accuracy")
    # Gap bars show over-/under-confidence: from accuracy up (or down) to mean confidence.
    ax.bar(table["lower"][used], (table["confidence"] - table["accuracy"])[used], bottom=table["accuracy"][used],
           width=width[used], align="edge", fill=False, hatch="///", edgecolor="tab:red", linewidth=0.5,
           label="gap to mean confidence")
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE = {ece:.3f}, {n_bins} bins)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


# --------------------------------------------------------------------------------------------
# Comparing runs
# --------------------------------------------------------------------------------------------


def plot_comparison(
    df: pd.DataFrame,
    x: str,
    y: str,
    hue: str | None = None,
    kind: str = "bar",
    err: Any = "sd",
    ax: Axes | None = None,
) -> Figure:
    """Mean of ``y`` per ``x`` (and ``hue``) across runs, e.g. seeds, with error bars.

    ``err`` is seaborn's ``errorbar``: ``"sd"``, ``"se"``, ``("ci", 95)`` or ``None``. Bar
    charts also show every run as a dot, so a mean of three seeds is not mistaken for one.
    """
    if kind not in ("bar", "point"):
        raise ValueError(f"kind must be 'bar' or 'point', got {kind!r}")
    missing = [c for c in (x, y, hue) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}")
    fig, ax = _new_ax(ax, (7, 4))
    common = dict(data=df, x=x, y=y, hue=hue, errorbar=err, ax=ax)
    if kind == "bar":
        sns.barplot(**common, capsize=0.15, alpha=0.85)
        sns.stripplot(data=df, x=x, y=y, hue=hue, dodge=hue is not None, color="black", size=3.5,
                      legend=False, ax=ax, palette=None if hue is None else ["black"] * df[hue].nunique())
    else:
        sns.pointplot(**common, dodge=0.3 if hue is not None else False, capsize=0.1, linestyle="none", markers="o")
    ax.set_title(f"{y} by {x}" + (f" and {hue}" if hue else "") + (f" (error bars: {err})" if err else ""))
    sns.despine(ax=ax)
    return fig


def plot_leaderboard(
    df: pd.DataFrame,
    metric: str = "test_accuracy",
    label: str = "run",
    params: str = "total_params",
    speed: str = "total_seconds",
    ax: Axes | None = None,
) -> Figure:
    """Runs ranked by ``metric`` (best on top), annotated with parameter count and run time.

    Rows sharing a ``label`` (e.g. seeds of one configuration) are averaged and get a
    standard-deviation error bar. Missing ``params``/``speed`` columns are simply not shown.
    """
    if metric not in df.columns or label not in df.columns:
        raise ValueError(f"need columns {label!r} and {metric!r}; available: {list(df.columns)}")
    agg: dict[str, tuple[str, str]] = {"mean": (metric, "mean"), "sd": (metric, "std"), "n": (metric, "count")}
    if params in df.columns:
        agg["params"] = (params, "first")
    if speed in df.columns:
        agg["speed"] = (speed, "mean")
    table = df.groupby(label, sort=False).agg(**agg).sort_values("mean", ascending=True)
    fig, ax = _new_ax(ax, (8, 0.45 * len(table) + 1.5))
    ypos = np.arange(len(table))
    xerr = table["sd"].fillna(0).to_numpy() if (table["n"] > 1).any() else None
    ax.barh(ypos, table["mean"], xerr=xerr, capsize=3, color=sns.color_palette("deep")[0])
    ax.set_yticks(ypos, table.index.astype(str))
    for y, (_, row) in zip(ypos, table.iterrows()):
        notes = [f"{row['mean']:.3f}"]
        if "params" in row and pd.notna(row["params"]):
            notes.append(f"{_human(row['params'])} params")
        if "speed" in row and pd.notna(row["speed"]):
            notes.append(_duration(row["speed"]))
        if row["n"] > 1:
            notes.append(f"n={int(row['n'])}")
        end = row["mean"] + (row["sd"] if xerr is not None and pd.notna(row["sd"]) else 0.0)  # clear the error bar
        ax.text(end, y, "  " + " · ".join(notes), va="center", fontsize=8)
    lo, hi = float(table["mean"].min()), float(table["mean"].max())
    # Accuracies all above 0.5: zoom in so differences are visible; leave room for the notes.
    left = max(0.0, lo - 0.1) if 0.5 < lo <= hi <= 1.0 else min(0.0, lo)
    ax.set_xlim(left, hi + 0.6 * max(hi - left, 1e-9))
    ax.set_xlabel(metric)
    ax.set_title(f"Leaderboard: {metric}")
    sns.despine(ax=ax)
    return fig


# --------------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------------


def plot_gradcam(
    images: np.ndarray,
    heatmaps: np.ndarray,
    titles: Sequence[str] | None = None,
    alpha: float = 0.45,
    ncols: int = 6,
) -> Figure:
    """Each image with its Grad-CAM heatmap (from :func:`eurosat_lib.evaluation.grad_cam`) on top."""
    images = np.asarray(images)
    heatmaps = np.asarray(heatmaps)
    if images.shape[0] != heatmaps.shape[0] or images.shape[1:3] != heatmaps.shape[1:3]:
        raise ValueError(f"images {images.shape} and heatmaps {heatmaps.shape} must match in number and size")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    n = max(len(images), 1)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = _image_grid(nrows, ncols, cell=1.6, extra_h=0.4)
    for i, a in enumerate(axes.flat):
        if i >= len(images):
            a.set_axis_off()
            continue
        a.imshow(images[i], interpolation="nearest")
        a.imshow(heatmaps[i], cmap="jet", alpha=alpha, vmin=0, vmax=1, interpolation="bilinear")
        if titles is not None:
            a.set_title(titles[i], fontsize=8)
    fig.suptitle("Grad-CAM: where the evidence for the class lies (red = most)")
    return fig


# --------------------------------------------------------------------------------------------
# Chapter-specific figures (each section owned by one chapter; keep additions inside it)
# --------------------------------------------------------------------------------------------

# --- chapter 00/06: data overview, truncation ---

# --- chapter 01/05: transfer learning, backbones ---

# --- chapter 02/04: negative transfer, overfitting ---
