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
from .evaluation import expected_calibration_error, reliability_table
from .runs import combine_history

__all__ = [
    "plot_channel_stats",
    "plot_class_balance",
    "plot_comparison",
    "plot_confusion_matrix",
    "plot_crossover",
    "plot_gradcam",
    "plot_history",
    "plot_intervals",
    "plot_leaderboard",
    "plot_mistakes",
    "plot_per_class",
    "plot_recipe_front",
    "plot_reliability",
    "plot_sample_grid",
    "axis_label",
]

#: Screen/book resolution; savefig(dpi=...) can raise it for print.
DPI = 100
_CHANNELS = ("red", "green", "blue")


#: Axis labels in words, with units, for the columns of the run tables the chapters plot. A figure
#: never shows a raw column name: :func:`axis_label` falls back to the name with spaces for
#: underscores, and tests/test_plots.py fails on any snake_case label.
AXIS_LABELS: dict[str, str] = {
    "accuracy": "accuracy",
    "train_accuracy": "training accuracy",
    "val_accuracy": "validation accuracy",
    "test_accuracy": "test accuracy",
    "loss": "loss (cross-entropy)",
    "val_loss": "validation loss (cross-entropy)",
    "train_minus_test": "training − test accuracy (gap)",
    "lr": "learning rate (log scale)",
    "lr_head": "head learning rate (log scale)",
    "lr_finetune": "fine-tuning learning rate (log scale)",
    "learning_rate": "learning rate (log scale)",
    "image_size": "input size (pixels per side)",
    "n_per_class": "labelled training images per class",
    "train_images": "training images",
    "unfreeze_fraction": "fraction of the backbone unfrozen",
    "finetune_s_per_epoch": "fine-tuning time per epoch (s)",
    "feature_seconds": "feature extraction time (s)",
    "fit_seconds": "training time (s)",
    "total_seconds": "run time (s)",
    "inference_images_per_s": "inference speed (images/s, log scale)",
    "images_per_s": "inference speed (images/s)",
    "total_params": "parameters (log scale)",
    "trainable": "trainable parameters",
    "backbone_params": "backbone parameters",
    "params_M": "parameters (millions)",
    "epoch": "epoch",
    "block": "backbone cut after block",
    "batchnorm": "BatchNorm layers during fine-tuning",
    "config": "regularisation",
    "label": "preprocessing",
    "mode": "preprocessing",
    "head": "classification head",
    "model": "model",
    "split": "split",
    "stage": "stage",
    "candidate": "candidate",
    "backbone": "backbone",
    "case": "case",
    "gap": "test error(transfer) − test error(scratch)",
}


def axis_label(column: str) -> str:
    """The words (with units) an axis shows for a table column, e.g. ``val_accuracy`` ->
    ``validation accuracy``; unknown names get spaces for underscores, never a raw name.

    Args:
        column: The column's name.

    Returns:
        The label.
    """
    return AXIS_LABELS.get(column, str(column).replace("_", " "))


def _is_learning_rate(column: str) -> bool:
    return column in ("lr", "learning_rate") or column.startswith("lr_") or column.endswith("_lr")


def _label_points(ax: Axes, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str], fontsize: float = 8) -> None:
    """Label points without overlaps: adjustText moves the labels apart (with leader lines) where
    it is installed; otherwise labels alternate above and below their point."""
    xs, ys, texts = list(map(float, xs)), list(map(float, ys)), [str(t) for t in texts]
    try:
        from adjustText import adjust_text
    except ImportError:  # optional dependency: alternating offsets already separate neighbours
        for i, (x, y, t) in enumerate(zip(xs, ys, texts)):
            ax.annotate(t, (x, y), xytext=(5, 5 if i % 2 == 0 else -11), textcoords="offset points", fontsize=fontsize)
        return
    labels = [ax.text(x, y, t, fontsize=fontsize) for x, y, t in zip(xs, ys, texts)]
    if len(labels) > 1:
        adjust_text(labels, x=xs, y=ys, ax=ax, arrowprops=dict(arrowstyle="-", color="grey", lw=0.5))


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
    """Images per class as horizontal bars; a ``EuroSAT`` with a split is stacked by split.

    Args:
        data_or_counts: A dataset, a class -> count mapping, or one count per class.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: Counts that are not one number per class.
    """
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
    """``per_class`` random images of each class; one row per class.

    Args:
        data: The dataset.
        per_class: Images per class.
        seed: Which random images.

    Returns:
        The figure.
    """
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

    Args:
        data: The dataset.
        max_images: The most images used.
        seed: Which random images.

    Returns:
        The figure.
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
    :func:`eurosat_lib.runs.combine_history`). Phase starts — e.g. where fine-tuning
    began — are drawn as vertical lines; pass ``phase_boundaries`` (epochs completed before each
    new phase) to override the ones derived from a list of phases.

    Args:
        history: The history, as above.
        metrics: The metrics drawn, one panel each.
        phase_boundaries: Epochs completed before each new phase (None: from the phases).

    Returns:
        The figure.

    Raises:
        ValueError: A metric is not in the history.
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
        ax.set_ylabel(axis_label(metric))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric.replace("_", " "))
        ax.legend(fontsize=8)
    sns.despine(fig=fig)
    return fig


# --------------------------------------------------------------------------------------------
# Errors and calibration
# --------------------------------------------------------------------------------------------


def plot_confusion_matrix(
    cm: Any, class_names: Sequence[str] = CLASS_NAMES, normalize: bool = True, ax: Axes | None = None
) -> Figure:
    """Confusion matrix heatmap (rows = true class). ``normalize`` shows row fractions (recall).

    Args:
        cm: The ``K x K`` matrix (rows = true class).
        class_names: The ``K`` class names.
        normalize: Show row fractions instead of counts.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: The matrix does not match the class names.
    """
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
    """Precision, recall and F1 per class from :func:`evaluate_predictions` (or its ``per_class``).

    Args:
        metrics: :func:`~eurosat_lib.evaluation.evaluate_predictions`'s result or its ``per_class``.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.
    """
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
    """Images at ``indices``, each titled ``true → predicted (confidence)``.

    Args:
        data_images: The images.
        y_true: Their true classes.
        y_prob: Their predicted probabilities.
        indices: Which images.
        class_names: The class names.
        ncols: Images per row.

    Returns:
        The figure.
    """
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
    """Reliability diagram: accuracy per confidence bin against the diagonal, ECE in the title.

    Args:
        y_true: True classes.
        y_prob: Predicted probabilities.
        n_bins: Confidence bins.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.
    """
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
    charts also show every run as a dot, so a mean of three seeds is not mistaken for one. A run
    with a sanity flag (a non-empty ``warnings`` column, ``"; "``-joined) is circled where it is
    drawn and the legend names the flags, as the tables mark it with ⚠: a mean that includes a
    collapsed or still-improving run must not look like a finding.

    Args:
        df: One row per run (optionally a ``warnings`` column: each run's sanity flags).
        x: The column on the x axis (the groups).
        y: The measured column.
        hue: A second grouping column (colours), or None.
        kind: ``"bar"`` or ``"point"``.
        err: The error bars, as above.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: An unknown ``kind`` or a missing column.
    """
    if kind not in ("bar", "point"):
        raise ValueError(f"kind must be 'bar' or 'point', got {kind!r}")
    missing = [c for c in (x, y, hue) if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}")
    fig, ax = _new_ax(ax, (7, 4))
    # Explicit orders, so the positions of flagged runs below are the ones seaborn draws at.
    order = _categories(df[x])
    hue_order = _categories(df[hue]) if hue is not None else None
    common = dict(data=df, x=x, y=y, hue=hue, order=order, hue_order=hue_order, errorbar=err, ax=ax)
    numeric = _is_learning_rate(x) and pd.api.types.is_numeric_dtype(df[x])
    if numeric:
        # Learning rates span decades: a numeric log axis, not evenly spaced categories.
        _numeric_points(df, x, y, hue, err, ax)
        ax.set_xscale("log")
    elif kind == "bar":
        sns.barplot(**common, capsize=0.15, alpha=0.85)
        # No jitter: each run's dot sits on its bar's centre line, where a flagged run's circle goes.
        sns.stripplot(data=df, x=x, y=y, hue=hue, order=order, hue_order=hue_order, dodge=hue is not None, jitter=False,
                      color="black", size=3.5, legend=False, ax=ax,
                      palette=None if hue is None else ["black"] * df[hue].nunique())  # fmt: skip
    else:
        sns.pointplot(**common, dodge=POINT_DODGE if hue is not None else False, capsize=0.1, linestyle="none", markers="o")
    _circle_flagged(df, x, y, hue, order, hue_order, None if numeric else kind, ax)
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    if hue is not None and ax.get_legend() is not None:
        ax.get_legend().set_title(axis_label(hue))
    ax.set_title(f"{axis_label(y)} by {axis_label(x)}" + (f" and {axis_label(hue)}" if hue else "")
                 + (f" (error bars: {_err_words(err)})" if err else ""))  # fmt: skip
    sns.despine(ax=ax)
    return fig


#: How far apart ``plot_comparison``'s point plots draw the ``hue`` levels of one group.
POINT_DODGE = 0.3


def _categories(values: pd.Series) -> list[Any]:
    """The order seaborn gives categories by default: a categorical's own, sorted numbers, else first appearance."""
    if isinstance(values.dtype, pd.CategoricalDtype):
        return [c for c in values.cat.categories if c in set(values)]
    unique = list(pd.unique(values.dropna()))
    return sorted(unique) if pd.api.types.is_numeric_dtype(values) else unique


def flagged_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of a table that carry a sanity flag.

    Args:
        df: One row per run; its ``warnings`` column holds each run's flags (``"; "``-joined, or a list).

    Returns:
        The rows with a flag, ``warnings`` as ``"; "``-joined text (no rows without the column).
    """
    if "warnings" not in df.columns:
        return df.iloc[0:0]
    w = df["warnings"].apply(lambda v: "; ".join(v) if isinstance(v, (list, tuple)) else ("" if v is None or v != v else str(v)))
    return df[w != ""].assign(warnings=w[w != ""])


def _circle_flagged(df: pd.DataFrame, x: str, y: str, hue: str | None, order: list[Any], hue_order: list[Any] | None,
                    kind: str | None, ax: Axes) -> None:  # fmt: skip
    """Circle each flagged run where :func:`plot_comparison` draws it, and say so in the legend.

    ``kind`` None: ``x`` is a numeric axis; ``"bar"``/``"point"``: categorical, at seaborn's
    positions (groups at 0, 1, ...; ``hue`` levels dodged as seaborn 0.13 dodges them: bars and
    their dots split a width of 0.8, points spread over :data:`POINT_DODGE`).
    """
    flagged = flagged_rows(df)
    if flagged.empty:
        return
    if kind is None:
        xs = flagged[x].astype(float).to_numpy()
    else:
        pos = {v: i for i, v in enumerate(order)}
        xs = flagged[x].map(pos).astype(float).to_numpy()
        if hue is not None and hue_order:
            n = len(hue_order)
            idx = flagged[hue].map({v: i for i, v in enumerate(hue_order)}).astype(float).to_numpy()
            if kind == "bar":
                w = 0.8 / n
                xs = xs + w * idx + w / 2 - 0.4
            elif n > 1:
                xs = xs - POINT_DODGE / 2 + POINT_DODGE / (n - 1) * idx
    kinds = sorted({f for w in flagged["warnings"] for f in w.split("; ") if f})
    ax.scatter(xs, flagged[y].astype(float), s=70, facecolors="none", edgecolors="black", linewidths=0.9, zorder=5,
               label=f"⚠ run flagged {', '.join(kinds)} ({len(flagged)})")  # fmt: skip
    old = ax.get_legend()
    handles, labels = ax.get_legend_handles_labels()
    if old is not None:
        # seaborn's hue legend may hold handles that are not labelled artists of the axes: keep them
        kept = [(h, t.get_text()) for h, t in zip(old.legend_handles, old.get_texts())]
        extra = [(h, lab) for h, lab in zip(handles, labels) if lab.startswith("⚠")]
        handles, labels = [h for h, _ in kept + extra], [lab for _, lab in kept + extra]
    ax.legend(handles, labels, fontsize=8, title=old.get_title().get_text() if old is not None else None)


def _err_words(err: Any) -> str:
    if err == "sd":
        return "± 1 sd over runs"
    if err == "se":
        return "± 1 standard error"
    if isinstance(err, tuple) and err[0] == "ci":
        return f"{err[1]}% interval"
    return str(err)


def _numeric_points(df: pd.DataFrame, x: str, y: str, hue: str | None, err: Any, ax: Axes) -> None:
    """Mean ± sd of ``y`` at each numeric ``x`` (one line per ``hue``), every run as a dot."""
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for (name, part), color in zip(groups, sns.color_palette("deep")):
        s = _mean_sd(part, x, y)
        ax.errorbar(s[x], s["mean"], yerr=s["sd"] if err else None, marker="o", capsize=3, color=color,
                    label=None if name is None else str(name))  # fmt: skip
        ax.scatter(part[x], part[y], s=10, color=color, alpha=0.5)
    ax.set_xticks(sorted(df[x].unique()), [f"{v:g}" for v in sorted(df[x].unique())])
    ax.minorticks_off()
    if hue is not None:
        ax.legend(fontsize=8, title=axis_label(hue))


def plot_intervals(
    table: pd.DataFrame,
    estimate: str = "diff",
    lo: str = "lo",
    hi: str = "hi",
    label: str | None = None,
    reference: float | None = 0.0,
    xlabel: str = "difference (95% interval)",
    title: str | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Dot-and-interval plot: one row per comparison, a dot at ``estimate`` and a line from ``lo``
    to ``hi`` (e.g. a paired difference and its 95 % interval), with a ``reference`` line (0 = no
    difference). For small differences a bar from zero hides what matters; this shows it.

    Args:
        table: one row per comparison; ``label`` column (or the index) names each row.
        estimate: column of the point estimate.
        lo: column of the interval's lower end.
        hi: column of the interval's upper end.
        label: column naming the rows; ``None`` uses the index.
        reference: where to draw the "no difference" line; ``None`` for none.
        xlabel: the axis label, in words.
        title: the title, in words.
        ax: draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: a named column is missing, or an interval does not contain its estimate.
    """
    missing = [c for c in (estimate, lo, hi) + ((label,) if label else ()) if c not in table.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(table.columns)}")
    est, low, high = (table[c].to_numpy(dtype=float) for c in (estimate, lo, hi))
    if np.any(low > est + 1e-12) or np.any(high < est - 1e-12):
        raise ValueError(f"every interval [{lo}, {hi}] must contain its {estimate}")
    names = (table[label] if label else table.index).astype(str).tolist()
    fig, ax = _new_ax(ax, (7, 0.45 * len(table) + 1.4))
    ypos = np.arange(len(table))[::-1]
    ax.hlines(ypos, low, high, color="tab:blue", linewidth=2)
    ax.plot(est, ypos, "o", color="tab:blue", markersize=6)
    if reference is not None:
        ax.axvline(reference, color="black", linewidth=0.8, linestyle="--")
    ax.set_yticks(ypos, names)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
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
    standard-deviation error bar. Missing ``params``/``speed`` columns are simply not shown. Bars
    start at zero (an accuracy axis ends at 1); the notes stand in a column right of the axes, so
    they need no room on the accuracy axis.

    Args:
        df: One row per run.
        metric: The ranking column.
        label: The column naming each configuration.
        params: The parameter-count column.
        speed: The run-time column.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: ``label`` or ``metric`` is missing.
    """
    from matplotlib.transforms import blended_transform_factory

    if metric not in df.columns or label not in df.columns:
        raise ValueError(f"need columns {label!r} and {metric!r}; available: {list(df.columns)}")
    agg: dict[str, tuple[str, str]] = {"mean": (metric, "mean"), "sd": (metric, "std"), "n": (metric, "count")}
    if params in df.columns:
        agg["params"] = (params, "first")
    if speed in df.columns:
        agg["speed"] = (speed, "mean")
    table = df.groupby(label, sort=False).agg(**agg).sort_values("mean", ascending=True)
    fig, ax = _new_ax(ax, (9, 0.45 * len(table) + 1.5))
    ypos = np.arange(len(table))
    several = bool((table["n"] > 1).any())
    xerr = table["sd"].fillna(0).to_numpy() if several else None
    ax.barh(ypos, table["mean"], xerr=xerr, capsize=3, color=sns.color_palette("deep")[0])
    ax.set_yticks(ypos, table.index.astype(str))
    # the notes in a column just right of the axes (x in axes fraction, y at each bar)
    beside = blended_transform_factory(ax.transAxes, ax.transData)
    for y, (_, row) in zip(ypos, table.iterrows()):
        notes = [f"{row['mean']:.3f}"]
        if "params" in row and pd.notna(row["params"]):
            notes.append(f"{_human(row['params'])} params")
        if "speed" in row and pd.notna(row["speed"]):
            notes.append(f"{_duration(row['speed'])} to train")
        if row["n"] > 1:
            notes.append(f"n={int(row['n'])}")
        ax.text(1.02, y, " · ".join(notes), va="center", fontsize=8, transform=beside, clip_on=False)
    lo, hi = float(table["mean"].min()), float(table["mean"].max())
    top = hi + (float(np.nanmax(xerr)) if xerr is not None and len(xerr) else 0.0)
    # A bar's length is its value: bars start at zero, and an accuracy axis stops at 1.
    right = 1.0 if 0.0 <= lo <= hi <= 1.0 and top <= 1.0 else top * 1.05 if top > 0 else 1.0
    ax.set_xlim(min(0.0, lo), right)
    ax.set_xlabel(axis_label(metric))
    ax.set_title(f"Leaderboard: {axis_label(metric)}" + (" (bar: mean; whiskers: ± 1 sd over seeds)" if several else ""))
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
    map_cells: tuple[int, int] | None = None,
) -> Figure:
    """Each image with its Grad-CAM heatmap (from :func:`eurosat_lib.gradcam.grad_cam`) on top.

    ``map_cells``: the size of the feature map the heatmaps were computed on (e.g. ``(2, 2)`` for
    MobileNetV2 at 64 px). Below 7 cells a side the figure says, in its title, that the map only
    locates evidence to within a quarter of the image or so: read it as coarse.

    Args:
        images: The images.
        heatmaps: Their heatmaps (same number and size).
        titles: One title per image, or None.
        alpha: The heatmaps' opacity.
        ncols: Images per row.
        map_cells: The feature map's size, as above (None: not stated).

    Returns:
        The figure.

    Raises:
        ValueError: Images and heatmaps do not match, or the titles are not one per image.
    """
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
    title = "Grad-CAM: where the evidence for the class lies (red = most)"
    if map_cells is not None and min(map_cells) < 7:
        title += (f"\nComputed on a {map_cells[0]}×{map_cells[1]} feature map, upsampled: it can only point to"
                  " a region of the image, not to objects")  # fmt: skip
    fig.suptitle(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------------------------
# Chapter-specific figures (each section owned by one chapter; keep additions inside it)
# --------------------------------------------------------------------------------------------

# --- chapter 00/06: data overview, truncation ---


def plot_normalization(table: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """EuroSAT's channel mean and std next to ImageNet's, per channel (0-1 scale).

    ``table`` is :func:`eurosat_lib.experiments.data_overview.normalization_table`: rows for the
    dataset and ``"ImageNet"``, columns ``(mean|std, channel)``. Bars are means, the black
    whiskers ± one standard deviation: how far the pixel distributions sit from each other.

    Args:
        table: The table described above.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.
    """
    rows = [r for r in table.index if "−" not in str(r)]
    fig, ax = _new_ax(ax, (6.5, 3.6))
    channels = list(dict.fromkeys(c for _, c in table.columns))
    width = 0.8 / max(len(rows), 1)
    xs = np.arange(len(channels))
    palette = sns.color_palette("deep", len(rows))
    for i, (row, color) in enumerate(zip(rows, palette)):
        means = [table.loc[row, ("mean", c)] for c in channels]
        stds = [table.loc[row, ("std", c)] for c in channels]
        pos = xs - 0.4 + width * (i + 0.5)
        ax.bar(pos, means, width=width * 0.95, yerr=stds, capsize=4, color=color, label=str(row), alpha=0.85)
        for p, m in zip(pos, means):
            ax.text(p, 0.01, f"{m:.2f}", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(xs, channels)
    ax.set_ylim(0, 1)
    ax.set_ylabel("pixel value / 255 (bar: mean, whisker: ± std)")
    ax.set_title("Channel statistics: EuroSAT vs ImageNet")
    ax.legend(fontsize=8, frameon=False)
    sns.despine(ax=ax)
    return fig


def plot_cut_tradeoff(
    table: pd.DataFrame,
    tolerance: float | None = None,
    chosen: str | None = None,
    costs: Sequence[tuple[str, str]] = (("backbone_params", "backbone parameters (log scale)"),
                                        ("images_per_s", "inference images/s (log scale)")),
) -> Figure:
    """Validation accuracy of each cut against what the cut saves: one panel per cost column.

    ``table`` is :func:`eurosat_lib.experiments.truncation.cut_table` (index: block names, in
    backbone order; ``val_mean``, ``val_sd`` and the cost columns). Points are joined in block
    order and labelled with the block (placed clear of the other points and labels, as
    :func:`plot_accuracy_vs_cost` places them). With the table's ``loss_high`` and ``drop`` the bars
    are the 95 % interval of each cut's loss against the full backbone — the interval the chapter's
    rule reads — drawn around the cut's mean: a cut is shown within the tolerance when its bar's
    lower end lies in the band. Without them, ± sd across seeds (the axis label says which). A band
    marks ``tolerance`` below the full backbone (the last row); ``chosen`` is ringed; the legend sits
    below the panels, clear of the points.

    Args:
        table: The table described above.
        tolerance: The chapter's tolerance (None: no band).
        chosen: The chosen block (None: none ringed).
        costs: ``(column, axis label)`` of each cost panel (columns the table lacks are skipped).

    Returns:
        The figure.

    Raises:
        ValueError: The table has none of the cost columns.
    """
    costs = [(c, label) for c, label in costs if c in table.columns and table[c].notna().any()]
    if not costs:
        raise ValueError(f"no cost columns to plot; table has {list(table.columns)}")
    fig, axes = plt.subplots(1, len(costs), figsize=(5.6 * len(costs), 4.6), dpi=DPI, layout="constrained", squeeze=False)
    full = table.iloc[-1]
    y = table["val_mean"].to_numpy(dtype=float)
    intervals = {"loss_high", "drop"} <= set(table.columns) and bool(np.isfinite(table["loss_high"].astype(float)).all())
    if intervals:
        # the loss's interval [drop - h, drop + h] is the cut's accuracy interval [mean - h, mean + h] below the full backbone
        err = (table["loss_high"] - table["drop"]).astype(float).clip(lower=0).to_numpy()
        ylabel = "validation accuracy (mean; bars: 95 % interval\nof the loss against the full backbone)"
    else:
        err = table["val_sd"].fillna(0).to_numpy(dtype=float) if "val_sd" in table else None
        ylabel = "validation accuracy (mean ± sd over seeds)"
    color = sns.color_palette("deep")[0]
    for ax, (col, label) in zip(axes[0], costs):
        x = table[col].to_numpy(dtype=float)
        ax.plot(x, y, "-", color=color, lw=1.2, zorder=1)
        ax.errorbar(x, y, yerr=err, fmt="none", ecolor=color, capsize=3, zorder=2)
        if tolerance is not None:
            ax.axhspan(full["val_mean"] - tolerance, full["val_mean"], color="green", alpha=0.12,
                       label=f"within {100 * tolerance:g} point(s) of the full backbone")
        ax.axhline(full["val_mean"], color="green", lw=0.8, ls="--")
        if chosen is not None and chosen in table.index:
            ax.plot(table.loc[chosen, col], table.loc[chosen, "val_mean"], "o", ms=13, mfc="none", mec="red",
                    label=f"chosen cut: {chosen}")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    what = {"backbone_params": "size", "images_per_s": "speed"}
    fig.suptitle("Where to cut: accuracy against " + " and ".join(what.get(c, label.split(" (")[0]) for c, label in costs))
    for ax, (col, label) in zip(axes[0], costs):
        # the points and their labels last: the layout (legend, titles) is then what the page shows
        points = pd.DataFrame({"block": table.index.astype(str), col: table[col].to_numpy(dtype=float), "val_mean": y})
        plot_accuracy_vs_cost(points, x=col, y="val_mean", label="block", logx=bool(np.all(points[col] > 0)), ax=ax,
                              xlabel=label, ylabel=ylabel, title="", fontsize=7)  # fmt: skip
    return fig


# --- chapter 01/05: transfer learning, backbones ---


def plot_curves(
    df: pd.DataFrame,
    y: str = "val_accuracy",
    hue: str = "model",
    x: str = "epoch",
    err: Any = "sd",
    ax: Axes | None = None,
) -> Figure:
    """Per-epoch curves of several models, mean across runs (e.g. seeds) with a ``err`` band.

    ``df`` is tidy: one row per run and epoch, with columns ``x``, ``y`` and ``hue``.

    Args:
        df: The tidy table described above.
        y: The measured column.
        hue: The column naming each model.
        x: The epoch column.
        err: The band, as :func:`plot_comparison`'s error bars.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: A named column is missing.
    """
    missing = [c for c in (x, y, hue) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}")
    fig, ax = _new_ax(ax, (7, 4))
    sns.lineplot(data=df, x=x, y=y, hue=hue, errorbar=err, marker="o", markersize=4, ax=ax)
    if x == "epoch":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(f"{axis_label(y)} per {axis_label(x)}"
                 + (f" (band: {_err_words(err)})" if err and df.groupby([hue, x]).size().max() > 1 else ""))
    ax.legend(fontsize=8, title=None)
    sns.despine(ax=ax)
    return fig


def plot_accuracy_vs_cost(
    df: pd.DataFrame,
    x: str = "inference_images_per_s",
    y: str = "val_accuracy",
    label: str = "candidate",
    hue: str | None = None,
    logx: bool = True,
    ax: Axes | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    title: str | None = None,
    fontsize: float = 8,
) -> Figure:
    """Accuracy against a cost (speed, parameters, time): one point per ``label``, mean ± sd of runs.

    Rows with a missing ``x`` (e.g. speeds not measured in eager smoke runs) are left out; an
    empty plot says so instead of failing. A log axis is labelled with plain numbers at 1-2-3-5
    steps (``300``, ``2M``), no minor-tick labels. Each point's label is placed from the drawn
    figure's geometry: beside its point, inside the axes and clear of every point, every other
    label and the legend, moved further out (with a leader line) where the nearest places are taken.

    Args:
        df: One row per run.
        x: The cost column.
        y: The accuracy column.
        label: The column naming each point.
        hue: A column colouring the points, or None.
        logx: A log-scale x axis.
        ax: Draw into this axes instead of a new figure.
        xlabel: The x axis's label (default: the column's words).
        ylabel: The y axis's label (default: the column's words).
        title: The title (default: accuracy against cost, in words).
        fontsize: The points' labels' size.

    Returns:
        The figure.

    Raises:
        ValueError: A named column is missing.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    missing = [c for c in (x, y, label) + ((hue,) if hue else ()) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the table; available: {list(df.columns)}")
    keys = [label] + ([hue] if hue and hue != label else [])
    agg = df.groupby(keys, sort=False).agg(x=(x, "mean"), y=(y, "mean"), sd=(y, "std"), n=(y, "count")).reset_index()
    agg = agg[np.isfinite(agg["x"].astype(float)) & np.isfinite(agg["y"].astype(float))]
    fig, ax = _new_ax(ax, (7, 4.5))
    ax.set_xlabel(xlabel if xlabel is not None else axis_label(x))
    ax.set_ylabel(ylabel if ylabel is not None else axis_label(y))
    ax.set_title(title if title is not None else f"{axis_label(y)} against {axis_label(x).split(' (')[0]}")
    sns.despine(ax=ax)
    if agg.empty:
        ax.text(0.5, 0.5, f"no runs with a measured {x}", ha="center", va="center", transform=ax.transAxes)
        return fig
    groups = agg.groupby(hue, sort=False) if hue else [(None, agg)]
    for (name, part), color in zip(groups, sns.color_palette("deep")):
        ax.errorbar(part["x"], part["y"], yerr=part["sd"].fillna(0) if part["sd"].notna().any() else None, fmt="o",
                    capsize=3, color=color, label=name if hue else None)  # fmt: skip
    if logx and (agg["x"] > 0).all():
        ax.set_xscale("log")
        span = float(np.log10(agg["x"].max() / agg["x"].min()))
        subs = (1.0,) if span > 2.5 else (1.0, 2.0, 5.0) if span > 1.2 else (1.0, 2.0, 3.0, 5.0)
        # matplotlib labels minor ticks of a short log axis (3×10⁵ 4×10⁵ ...), and they collide
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda v, _: f"{v / 1e6:g}M" if v >= 1e6 else f"{v / 1e3:g}k" if v >= 1e3 else f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    legend = ax.legend(fontsize=8, title=axis_label(hue)) if hue else None

    # Labels go where the figure as shown has room: draw it first (layout, legend place), then try
    # offsets around each point, nearest first, keeping the first place clear of everything placed.
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    if legend is not None:
        box = legend.get_window_extent(renderer).transformed(ax.transAxes.inverted())
        legend.set_bbox_to_anchor((box.x0, box.y0, box.width, box.height), transform=ax.transAxes)
        legend.set_loc("center")  # frozen: "best" would move it onto the labels at the next draw
    pts = ax.transData.transform(np.column_stack([agg["x"].astype(float), agg["y"].astype(float)]))
    frame = ax.get_window_extent(renderer)
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    clear = 7 * fig.dpi / 72  # a marker's radius (or a ring drawn around it), in pixels
    around = [(1, 0, "left", "center"), (-1, 0, "right", "center"), (0, 1, "center", "bottom"), (0, -1, "center", "top"),
              (1, 1, "left", "bottom"), (-1, 1, "right", "bottom"), (1, -1, "left", "top"), (-1, -1, "right", "top")]
    for (px, py), xv, yv, text in zip(pts, agg["x"], agg["y"], agg[label].astype(str)):
        placed = None
        for step in (9, 18, 30, 44):
            for dx, dy, ha, va in around:
                t = ax.annotate(text, (xv, yv), xytext=(dx * step, dy * step), textcoords="offset points", ha=ha, va=va,
                                fontsize=fontsize)  # fmt: skip
                bb = t.get_window_extent(renderer)
                hits_point = any(bb.x0 - clear < qx < bb.x1 + clear and bb.y0 - clear < qy < bb.y1 + clear for qx, qy in pts)
                inside = frame.x0 <= bb.x0 and bb.x1 <= frame.x1 and frame.y0 <= bb.y0 and bb.y1 <= frame.y1
                if inside and not hits_point and not any(bb.overlaps(o) for o in taken):
                    placed = (dx * step, dy * step, ha, va, bb)
                t.remove()
                if placed:
                    break
            if placed:
                break
        ox, oy, ha, va, bb = placed or (9, 0, "left", "center", None)
        t = ax.annotate(text, (xv, yv), xytext=(ox, oy), textcoords="offset points", ha=ha, va=va, fontsize=fontsize)
        taken.append(bb if bb is not None else t.get_window_extent(renderer))
        if max(abs(ox), abs(oy)) > 9:
            # a leader line from a label moved further out, drawn apart so the label's own box stays the text's
            ax.annotate("", (xv, yv), xytext=(ox, oy), textcoords="offset points",
                        arrowprops=dict(arrowstyle="-", color="grey", lw=0.5, shrinkA=0, shrinkB=4))
    return fig

# --- chapter 02/04: negative transfer, overfitting ---


def _mean_sd(df: pd.DataFrame, by: str | list[str], col: str) -> pd.DataFrame:
    g = df.groupby(by, sort=True)[col]
    return pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1).fillna(0.0), "n": g.count()}).reset_index()


def plot_gap_vs_n(df: pd.DataFrame, x: str = "n_per_class") -> Figure:
    """Left: test error of the transfer and scratch arms against ``x`` (mean ± sd over seeds, dots =
    seeds). Right: the negative-transfer gap ``err_transfer - err_scratch`` (> 0: transfer hurt).

    Args:
        df: One row per data size and seed (``err_transfer``, ``err_scratch``, ``gap``, ``seed``).
        x: The data-size column.

    Returns:
        The figure.

    Raises:
        ValueError: A named column is missing.
    """
    for c in (x, "err_transfer", "err_scratch", "gap"):
        if c not in df.columns:
            raise ValueError(f"column {c!r} missing; available: {list(df.columns)}")
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.9), dpi=DPI, layout="constrained")
    colors = sns.color_palette("deep")
    for col, label, color in (("err_transfer", "transfer (pretrained)", colors[0]), ("err_scratch", "from scratch", colors[1])):
        s = _mean_sd(df, x, col)
        a1.errorbar(s[x], s["mean"], yerr=s["sd"], marker="o", capsize=3, color=color, label=label)
        a1.scatter(df[x], df[col], s=10, color=color, alpha=0.5)
    a1.set(xscale="log", xlabel="labelled training images per class", ylabel="test error", title="Test error (mean ± sd over seeds)")
    a1.legend(fontsize=8)
    s = _mean_sd(df, x, "gap")
    # the gap's 95 % interval over seeds (Student t), as the chapter's table states it
    from .stats import paired_diff

    half = []
    for v in s[x]:
        g = df.loc[df[x] == v, "gap"].to_numpy(float)
        d = paired_diff(g, np.zeros_like(g)) if len(g) > 1 else None
        half.append((d.high - d.mean) if d is not None and np.isfinite(d.high) else 0.0)
    half = np.asarray(half)
    a2.axhline(0, color="black", linewidth=0.8)
    a2.axhspan(0, max(0.05, float((s["mean"] + half).max()) * 1.1), color="tab:red", alpha=0.07, label="gap > 0: negative transfer")
    a2.errorbar(s[x], s["mean"], yerr=half, marker="o", capsize=3, color="black", label="gap (mean, 95 % interval)")
    a2.scatter(df[x], df["gap"], s=10, color="grey", alpha=0.6, label="one seed")
    a2.set(xscale="log", xlabel="labelled training images per class", ylabel="error(transfer) − error(scratch)",
           title="Negative-transfer gap")
    a2.legend(fontsize=8, loc="lower right")
    for a in (a1, a2):
        a.set_xticks(sorted(df[x].unique()), [str(v) for v in sorted(df[x].unique())])
        a.minorticks_off()
    sns.despine(fig=fig)
    return fig


_VERDICT_COLORS = {"negative": "tab:red", "positive": "tab:green", "inconclusive": "tab:grey"}


def plot_case_gaps(df: pd.DataFrame, case: str = "case", ax: Axes | None = None, summary: pd.DataFrame | None = None) -> Figure:
    """One bar per case: mean gap with its 95 % interval (dots = seeds), coloured by the verdict.

    The colours and intervals come from ``summary`` (``negative_transfer.summarise_gaps`` per case:
    ``gap_low``, ``gap_high``, ``verdict``), the same numbers the chapter's table and text state:
    red where the interval lies above zero (transfer hurt), green below, grey where it includes
    zero or a run was flagged. Without ``summary`` every bar is grey with ± 1 sd over seeds, and
    the title says so.

    Args:
        df: One row per case and seed (``gap``).
        case: The column naming the case.
        ax: Draw into this axes instead of a new figure.
        summary: The per-case verdicts and intervals.

    Returns:
        The figure.

    Raises:
        ValueError: ``case`` or ``gap`` is missing.
    """
    if case not in df.columns or "gap" not in df.columns:
        raise ValueError(f"need columns {case!r} and 'gap'; available: {list(df.columns)}")
    order = list(dict.fromkeys(df[case]))
    s = _mean_sd(df, case, "gap").set_index(case).loc[order].reset_index()
    fig, ax = _new_ax(ax, (8, 0.55 * len(order) + 1.6))
    y = np.arange(len(order))[::-1]
    if summary is not None:
        v = summary.set_index(case).loc[order]
        colors = [_VERDICT_COLORS.get(str(x).split()[0], "tab:grey") if not str(x).startswith("not a finding") else "tab:grey"
                  for x in v["verdict"]]  # fmt: skip
        low, high = v["gap_low"].to_numpy(float), v["gap_high"].to_numpy(float)
        mean = v["gap_mean"].to_numpy(float)
        xerr = np.nan_to_num(np.vstack([mean - low, high - mean]), nan=0.0)
        title = "Negative-transfer gap per case (bars: 95 % interval; red: above zero, transfer hurt)"
    else:
        colors, mean, xerr = ["tab:grey"] * len(order), s["mean"].to_numpy(float), s["sd"].to_numpy(float)
        title = "Negative-transfer gap per case (mean ± 1 sd over seeds; no verdicts given)"
    ax.barh(y, mean, xerr=xerr, color=colors, alpha=0.8, capsize=3)
    pos = dict(zip(order, y))
    ax.scatter(df["gap"], [pos[c] for c in df[case]], color="black", s=10, zorder=3)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(y, order)
    ax.set_xlabel("gap = test error(transfer) − test error(scratch)")
    ax.set_title(title)
    sns.despine(ax=ax)
    return fig


def plot_learning_curves(histories: Mapping[str, Any], metrics: Sequence[str] = ("loss", "accuracy"), title: str | None = None,
                         sharey: bool = True) -> Figure:  # fmt: skip
    """Train (solid) and validation (dashed) curves of several runs side by side, one row per run.

    ``histories`` maps a label to anything :func:`eurosat_lib.runs.combine_history` accepts.
    The shaded area between the two curves is the generalisation gap. Where a run starts a new
    phase (fine-tuning after the head) a dotted vertical line marks it, as in :func:`plot_history`.
    The rows share each metric's y axis, so one run's curve can be read against another's.

    Args:
        histories: Label -> history.
        metrics: The metrics drawn, one column each.
        title: A title over the whole figure (e.g. which seed the runs are), or None.
        sharey: One y axis per metric across the rows; False gives each panel its own.

    Returns:
        The figure.
    """
    fig, axes = plt.subplots(len(histories), len(metrics), figsize=(4.6 * len(metrics) + 0.5, 3.2 * len(histories)),
                             dpi=DPI, squeeze=False, layout="constrained", sharey="col" if sharey else False)  # fmt: skip
    for row, (label, hist) in zip(axes, histories.items()):
        merged, boundaries, names = combine_history(hist)
        for ax, metric in zip(row, metrics):
            tr = np.asarray(merged.get(metric, []), dtype=float)
            va = np.asarray(merged.get(f"val_{metric}", []), dtype=float)
            ep = np.arange(1, max(len(tr), len(va)) + 1)
            if len(tr):
                ax.plot(ep[: len(tr)], tr, "-", marker="o", markersize=2.5, label="train")
            if len(va):
                ax.plot(ep[: len(va)], va, "--", marker="o", markersize=2.5, label="validation")
            if len(tr) and len(tr) == len(va):
                ax.fill_between(ep, tr, va, color="tab:red", alpha=0.1, label="gap")
            for i, b in enumerate(boundaries):
                # Epoch b is the last of the previous phase; the line sits between it and b + 1.
                name = {"finetune": "fine-tuning", "phase 2": "fine-tuning"}.get(names[i + 1], names[i + 1])
                ax.axvline(b + 0.5, color="grey", linestyle=":", linewidth=1.2)
                ax.annotate(f"{name} starts", xy=(b + 0.5, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -3),
                            textcoords="offset points", fontsize=8, va="top", color="grey")  # fmt: skip
            ax.set_title(f"{label}: {axis_label(metric)}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel(axis_label(metric))
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelleft=True)  # a shared axis keeps its numbers on every row
            ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    sns.despine(fig=fig)
    return fig


def plot_accuracy_curve(df: pd.DataFrame, x: str, y: str, hue: str | None = None, logx: bool = True,
                        ax: Axes | None = None) -> Figure:  # fmt: skip
    """Mean ± sd of ``y`` against ``x`` over seeds (one line per ``hue``), every seed as a dot.

    Args:
        df: One row per run.
        x: The x column (e.g. training images).
        y: The measured column.
        hue: The column naming each line, or None.
        logx: A log-scale x axis.
        ax: Draw into this axes instead of a new figure.

    Returns:
        The figure.
    """
    fig, ax = _new_ax(ax, (7, 4))
    groups = [(None, df)] if hue is None else list(df.groupby(hue, sort=False))
    for (name, part), color in zip(groups, sns.color_palette("deep")):
        s = _mean_sd(part, x, y)
        ax.errorbar(s[x], s["mean"], yerr=s["sd"], marker="o", capsize=3, color=color, label=name)
        ax.scatter(part[x], part[y], s=9, color=color, alpha=0.5)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(axis_label(x))
    ax.set_ylabel(axis_label(y))
    ax.set_title(f"{axis_label(y)} against {axis_label(x)} (mean ± sd over seeds)")
    if hue is not None:
        ax.legend(fontsize=8)
    sns.despine(ax=ax)
    return fig


def plot_eval_scenarios(scenarios: pd.DataFrame, honest: float,
                        reported: Mapping[str, float | tuple[float, float]] | None = None,
                        ax: Axes | None = None) -> Figure:  # fmt: skip
    """Accuracy a model would be credited with under each evaluation scenario, against honest numbers.

    Boxes: random test sets resampled from the chapter's good model (5th-95th percentile), against
    its honest full-test accuracy ``honest`` (dashed line). Diamonds: single leaky numbers, each
    drawn against **its own** honest reference — a leak is only measured against the number the
    same model (or the same choice) earns honestly, not against another model's.

    Args:
        scenarios: rows ``scenario``, ``accuracy`` (from ``overfitting.test_set_scenarios``).
        honest: the good model's accuracy on the full test split.
        reported: label -> ``(leaky, own_reference)``; a bare float uses ``honest`` as its reference
            (only right when the leaky number is the good model's own).
        ax: axes to draw on (a new figure if None).

    Returns:
        The figure.
    """
    fig, ax = _new_ax(ax, (9, 0.5 * (scenarios["scenario"].nunique() + len(reported or {})) + 1.8))
    order = list(dict.fromkeys(scenarios["scenario"]))
    sns.boxplot(scenarios, x="accuracy", y="scenario", order=order, whis=(5, 95), showfliers=False, color="tab:blue",
                ax=ax, width=0.6)  # fmt: skip
    labels = order[:]
    ax.axvline(honest, color="black", linestyle="--", linewidth=1.2, label=f"good model, full test split ({honest:.1%})")
    if reported:
        for i, (name, pair) in enumerate(reported.items()):
            value, ref = (pair if isinstance(pair, (tuple, list)) else (pair, honest))
            yi = len(order) + i
            ax.plot([ref, value], [yi, yi], color="0.5", linewidth=1.5, zorder=2)
            ax.scatter([ref], [yi], marker="|", s=260, linewidths=2.5, color="black", zorder=3,
                       label="its own honest number" if i == 0 else None)  # fmt: skip
            ax.scatter([value], [yi], marker="D", color="tab:red", zorder=4, label="leaky number" if i == 0 else None)
            ax.annotate(f" {value:.1%} ({100 * (value - ref):+.1f} points vs its honest {ref:.1%})", (max(value, ref), yi),
                        va="center", fontsize=8)  # fmt: skip
            labels.append(name)
        ax.set_yticks(range(len(labels)), labels)
        ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlabel("accuracy that would be reported (boxes: 5th-95th percentile of random draws)")
    ax.set_ylabel("")
    ax.set_title("What the evaluation would have reported")
    ax.legend(fontsize=8, loc="lower left")
    sns.despine(ax=ax)
    return fig


# --- chapter 03/04: the fine-tuning crossover ---


def plot_crossover(
    curves: pd.DataFrame,
    runs: pd.DataFrame | None = None,
    ax: Axes | None = None,
) -> Figure:
    """Test accuracy against labelled images per class (log scale), one line per arm, with its band.

    Args:
        curves: one row per arm and size with ``label`` (the arm in words), ``n_per_class``,
            ``mean``, ``low`` and ``high`` (the 95 % interval over seeds; NaN: no band), as
            :func:`eurosat_lib.experiments.crossover.curves` returns.
        runs: optional per-run rows (``arm``, ``n_per_class``, ``test_acc``) drawn as dots, so a
            mean of three seeds is not mistaken for one run; a run with a sanity flag (a non-empty
            ``warnings``) is circled and the legend says so, as the tables mark it with ⚠.
        ax: draw into this axes instead of a new figure.

    Returns:
        The figure.

    Raises:
        ValueError: a needed column is missing.
    """
    missing = [c for c in ("label", "n_per_class", "mean", "low", "high") if c not in curves.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the curves table; available: {list(curves.columns)}")
    fig, ax = _new_ax(ax, (7.5, 4.5))
    colors = dict(zip(pd.unique(curves["label"]), sns.color_palette("deep")))
    key = "arm" if "arm" in curves.columns else "label"
    for label, part in curves.groupby("label", sort=False):
        part = part.sort_values("n_per_class")
        color = colors[label]
        ax.plot(part["n_per_class"], part["mean"], marker="o", color=color, label=label)
        band = part.dropna(subset=["low", "high"])
        if len(band):
            ax.fill_between(band["n_per_class"], band["low"], band["high"], color=color, alpha=0.18, linewidth=0)
        if runs is not None and key in runs.columns:
            mine = runs[runs[key].astype(str) == str(part[key].iloc[0])]
            ax.scatter(mine["n_per_class"], mine["test_acc"], s=9, color=color, alpha=0.5)
    if runs is not None:
        flagged = flagged_rows(runs)
        if len(flagged):
            kinds = sorted({f for w in flagged["warnings"] for f in w.split("; ") if f})
            ax.scatter(flagged["n_per_class"], flagged["test_acc"], s=60, facecolors="none", edgecolors="black",
                       linewidths=0.8, label=f"⚠ run flagged {', '.join(kinds)} ({len(flagged)})")  # fmt: skip
    sizes = sorted(curves["n_per_class"].unique())
    ax.set_xscale("log")
    ax.set_xticks(sizes, [f"{v:,.0f}" for v in sizes])
    ax.minorticks_off()
    ax.set_xlabel("labelled training images per class (log scale)")
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_title("test accuracy against labelled data (line: mean over seeds; band: 95% interval)")
    ax.legend(fontsize=8)
    sns.despine(ax=ax)
    return fig


def plot_similarity(curves: pd.DataFrame, runs: pd.DataFrame | None = None) -> Figure:
    """Test accuracy against labelled images per class, one line per source, one panel per arm.

    The from-scratch line (the ``scratch`` arm, source ``random``) is drawn in both panels: it is
    the "no transfer" reference of the frozen and the fine-tuned arm alike.

    Args:
        curves: one row per (arm, source, size) with ``arm``, ``source``, ``label`` (the source in
            words), ``n_per_class``, ``mean``, ``low`` and ``high`` (95 % interval over seeds; NaN:
            no band), as :func:`eurosat_lib.experiments.similarity.curves` returns.
        runs: optional per-run rows (``arm``, ``source``, ``n_per_class``, ``test_acc``), drawn as dots.

    Returns:
        The figure (panels "frozen base + head" and "fine-tuned: all layers", where present).

    Raises:
        ValueError: a needed column is missing, or there is nothing to draw.
    """
    missing = [c for c in ("arm", "source", "label", "n_per_class", "mean", "low", "high") if c not in curves.columns]
    if missing:
        raise ValueError(f"columns {missing} not in the curves table; available: {list(curves.columns)}")
    arms = [a for a in ("frozen", "finetune") if (curves["arm"].astype(str) == a).any()]
    if not arms:
        raise ValueError("no frozen or fine-tuned runs in the curves table: nothing to draw")
    titles = {"frozen": "frozen base + head", "finetune": "fine-tuned: all layers"}
    fig, axes = plt.subplots(1, len(arms), figsize=(6.2 * len(arms), 4.4), dpi=DPI, layout="constrained", sharey=True,
                             squeeze=False)  # fmt: skip
    labels = list(pd.unique(curves["label"]))
    colors = dict(zip(labels, sns.color_palette("deep")))
    scratch = curves[curves["arm"].astype(str) == "scratch"]
    for ax, arm in zip(axes[0], arms):
        mine = curves[curves["arm"].astype(str) == arm]
        for label, part in pd.concat([mine, scratch]).groupby("label", sort=False):
            part = part.sort_values("n_per_class")
            color = colors[label]
            is_scratch = (part["arm"].astype(str) == "scratch").all()
            ax.plot(part["n_per_class"], part["mean"], marker="o", color=color, label=label,
                    linestyle="--" if is_scratch else "-")  # fmt: skip
            band = part.dropna(subset=["low", "high"])
            if len(band):
                ax.fill_between(band["n_per_class"], band["low"], band["high"], color=color, alpha=0.15, linewidth=0)
            if runs is not None and {"arm", "source", "n_per_class", "test_acc"} <= set(runs.columns):
                src, a = str(part["source"].iloc[0]), str(part["arm"].iloc[0])
                dots = runs[(runs["source"].astype(str) == src) & (runs["arm"].astype(str) == a)]
                ax.scatter(dots["n_per_class"], dots["test_acc"], s=8, color=color, alpha=0.45)
        sizes = sorted(pd.concat([mine, scratch])["n_per_class"].unique())
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{v:,.0f}" for v in sizes])
        ax.minorticks_off()
        ax.set_xlabel("labelled target images per class (log scale)")
        ax.set_title(titles[arm], fontsize=10)
        sns.despine(ax=ax)
    axes[0][0].set_ylabel("test accuracy on the target classes")
    axes[0][0].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.suptitle("source similarity: line = mean over seeds, band = 95% interval, dashed = no pretraining", fontsize=10)
    return fig


# --- the recipe study (issue 15) ---


def plot_recipe_front(
    entries: Sequence[Mapping[str, Any]],
    goal: tuple[float, float] = (0.983, 20.0),
    moonshot: tuple[float, float] = (0.986, 30.0),
    anchor: tuple[str, float] | None = ("Helber et al. ResNet-50 (GPU, 224 px)", 0.9857),
    front: Sequence[Mapping[str, Any]] = (),
    ax: Axes | None = None,
    machine: str | None = None,
) -> Figure:
    """Test accuracy against training minutes, one point per configuration, with the Pareto front.

    Filled dots are plain test accuracy: the pale band behind each is its 95 % Wilson interval over
    the test images, the capped bar the range over seeds where there are several. Hollow dots are
    the same runs with dihedral test-time augmentation (drawn at the same training minutes: their
    inference time is not training). The goal and the moonshot are the corners of the shaded
    regions a configuration must reach. Configurations without minutes on this time axis cannot be
    placed and are listed in the title with the reason: timed only on another CPU, or timed here
    but not trusted (contended, resumed, features cached by an earlier run).

    Args:
        entries: one mapping per configuration with ``recipe``, ``minutes`` (NaN: not on this axis),
            ``test_acc``, ``tta_test_acc``, ``n_test``, ``axis_runs`` (its runs on this axis) and
            ``runs`` (each with ``test_acc``), as :func:`eurosat_lib.summaries.recipes.by_recipe` returns.
        goal: ``(test accuracy, minutes)`` of the goal.
        moonshot: ``(test accuracy, minutes)`` of the moonshot.
        anchor: a published accuracy drawn as a horizontal line, or None.
        front: the Pareto front's entries (:func:`eurosat_lib.summaries.recipes.pareto_front`), drawn as a step line.
        ax: draw into this axes instead of a new figure.
        machine: the CPU the minutes were measured on, named in the x-axis label (minutes from
            different CPUs are different axes).

    Returns:
        The figure.
    """
    from .sanity import wilson_interval

    fig, ax = _new_ax(ax, (8, 5))
    timed = [e for e in entries if np.isfinite(e["minutes"])]
    elsewhere = [e["recipe"] for e in entries if not np.isfinite(e["minutes"]) and not e.get("axis_runs")]
    distrusted = [e["recipe"] for e in entries if not np.isfinite(e["minutes"]) and e.get("axis_runs")]
    if not timed:
        ax.text(0.5, 0.5, "no configuration with a trusted timing yet", ha="center", va="center", transform=ax.transAxes)
    else:
        xs = np.array([e["minutes"] for e in timed])
        ys = np.array([e["test_acc"] for e in timed])
        walls = [wilson_interval(e["test_acc"], int(e["n_test"])) if e.get("n_test") else (y, y) for e, y in zip(timed, ys)]
        ax.vlines(xs, [w[0] for w in walls], [w[1] for w in walls], color="C0", lw=4, alpha=0.18,
                  label="95 % interval over the test images")  # fmt: skip
        lo = ys - np.array([min(r["test_acc"] for r in e["runs"]) for e in timed])
        hi = np.array([max(r["test_acc"] for r in e["runs"]) for e in timed]) - ys
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", color="C0", capsize=3, label="test accuracy (bar: range over seeds)")
        tta = np.array([e["tta_test_acc"] for e in timed], dtype=float)
        ok = np.isfinite(tta)
        ax.scatter(xs[ok], tta[ok], facecolors="none", edgecolors="C1", label="with test-time augmentation (8 views)")
        for x, y, t in zip(xs[ok], ys[ok], tta[ok]):
            ax.plot([x, x], [y, t], color="C1", lw=0.6, alpha=0.6)
        if front:
            ax.step([e["minutes"] for e in front], [e["test_acc"] for e in front], where="post", color="C0", alpha=0.5, lw=1,
                    label="Pareto front (test)")  # fmt: skip
        top = max(np.nanmax(np.r_[ys, tta[ok] if ok.any() else ys]), moonshot[0]) + 0.002
        bottom = min(min(w[0] for w in walls) - 0.003, goal[0] - 0.01)
        right = max(xs.max() * 1.08, moonshot[1] * 1.05)
        for (acc, mins), name, color in ((goal, "goal", "C2"), (moonshot, "moonshot", "C3")):
            ax.add_patch(plt.Rectangle((0, acc), mins, top - acc, color=color, alpha=0.08, lw=0))
            ax.plot([0, mins, mins], [acc, acc, top], color=color, lw=1, ls="--",
                    label=f"{name}: ≥ {100 * acc:.1f} % in ≤ {mins:.0f} min")  # fmt: skip
        if anchor is not None:
            ax.axhline(anchor[1], color="grey", lw=0.8, ls=":", label=f"{anchor[0]}: {100 * anchor[1]:.2f} %")
        ax.set_xlim(0, right)
        ax.set_ylim(bottom, top)
        ax.legend(fontsize=7, loc="lower right")
        # labels last: adjustText moves them in display coordinates, which the limits above change
        _label_points(ax, xs, ys, [e["recipe"] for e in timed])
    ax.set_xlabel("training minutes (head phase + fine-tuning)" + (f" on {machine}" if machine else ""))
    ax.set_ylabel("test accuracy")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.1%}"))
    title = "recipe study: test accuracy against training time"
    if elsewhere:
        title += f"\nnot placed, timed on another CPU: {', '.join(elsewhere)}"
    if distrusted:
        title += f"\nnot placed, timing not trusted: {', '.join(distrusted)}"
    ax.set_title(title, fontsize=10)
    sns.despine(ax=ax)
    return fig
