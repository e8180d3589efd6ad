"""Evaluation: metrics and calibration.

Everything here works on plain arrays — integer labels ``y_true`` ``(N,)`` and class
probabilities ``y_prob`` ``(N, K)`` — so the same code scores a Keras model, a saved prediction
file or a toy example::

    metrics, y_prob = evaluate_model(model, test)           # metrics: JSON-serialisable dict
    ece = expected_calibration_error(test.labels, y_prob)

Run records (``record.json``, :func:`eurosat_lib.runs.gather`) live in :mod:`eurosat_lib.runs`,
Grad-CAM in :mod:`eurosat_lib.gradcam`. Keras is imported only inside the functions that touch
models: metrics and calibration are plain NumPy/pandas/scikit-learn.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from .data import CLASS_NAMES, EuroSAT

__all__ = [
    "evaluate_model",
    "evaluate_predictions",
    "expected_calibration_error",
    "most_confident_mistakes",
    "predict_proba",
    "reliability_table",
]

#: Tolerance for "rows sum to 1": float32 softmax outputs are off by ~1e-6, never by 1e-3.
_PROB_ATOL = 1e-3


# --------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------


def _check_inputs(y_true: Any, y_prob: Any, num_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert ``(y_true, y_prob)``; every message says what was expected."""
    y_true = np.asarray(y_true)
    y_prob = np.asarray(y_prob, dtype=np.float64)
    if y_prob.ndim != 2:
        raise ValueError(f"y_prob must be 2-D (n_samples, n_classes) probabilities, got shape {y_prob.shape}")
    n, k = y_prob.shape
    if y_true.ndim != 1:
        raise ValueError(
            f"y_true must be 1-D integer class labels, got shape {y_true.shape}"
            + (" (one-hot? pass y.argmax(axis=1))" if y_true.ndim == 2 else "")
        )
    if y_true.shape[0] != n:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but y_prob has {n} rows; they must match")
    if n == 0:
        raise ValueError("cannot evaluate zero samples (y_true and y_prob are empty)")
    if num_classes is not None and k != num_classes:
        raise ValueError(f"y_prob has {k} columns but there are {num_classes} class names")
    if not np.issubdtype(y_true.dtype, np.integer):
        if np.issubdtype(y_true.dtype, np.floating) and np.all(np.isfinite(y_true)) and np.all(y_true == np.round(y_true)):
            y_true = y_true.astype(np.int64)
        else:
            raise ValueError(f"y_true must hold integer class indices, got dtype {y_true.dtype}")
    if y_true.min() < 0 or y_true.max() >= k:
        raise ValueError(f"y_true labels must be in [0, {k - 1}], found values in [{y_true.min()}, {y_true.max()}]")
    if not np.all(np.isfinite(y_prob)):
        raise ValueError("y_prob contains NaN or infinite values")
    if y_prob.min() < -_PROB_ATOL or y_prob.max() > 1 + _PROB_ATOL:
        raise ValueError(
            f"y_prob must be probabilities in [0, 1], found values in [{y_prob.min():.4g}, {y_prob.max():.4g}] "
            "(logits? apply a softmax first)"
        )
    sums = y_prob.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > _PROB_ATOL)
    if bad.size:
        raise ValueError(
            f"each row of y_prob must sum to 1 (±{_PROB_ATOL}); {bad.size} row(s) do not, e.g. row {bad[0]} "
            f"sums to {sums[bad[0]]:.6g} (logits? apply a softmax first)"
        )
    # Remove float32 round-off (rows summing to 1 ± 1e-7) so downstream checks, e.g. sklearn's
    # log_loss, see exact probabilities and do not warn.
    y_prob = np.clip(y_prob, 0.0, None)
    return y_true.astype(np.int64), y_prob / y_prob.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------------------------
# Metrics and calibration
# --------------------------------------------------------------------------------------------


def _bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bins ``((m-1)/M, m/M]`` as in Guo et al. (2017); confidence 0 goes to bin 0."""
    if not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    uppers = np.linspace(0.0, 1.0, n_bins + 1)[1:-1]
    return np.searchsorted(uppers, confidence, side="left")


def reliability_table(y_true: Any, y_prob: Any, n_bins: int = 15) -> pd.DataFrame:
    """Per confidence bin: mean confidence, accuracy and count (empty bins give NaN).

    Columns ``bin, lower, upper, confidence, accuracy, count`` — one row per bin, so the table
    has the same shape whatever the data.

    Args:
        y_true: True class indices, ``(N,)``.
        y_prob: Predicted probabilities, ``(N, K)``.
        n_bins: Equal-width confidence bins over [0, 1].

    Returns:
        The table.
    """
    y_true, y_prob = _check_inputs(y_true, y_prob)
    conf = y_prob.max(axis=1)
    correct = (y_prob.argmax(axis=1) == y_true).astype(np.float64)
    idx = _bin_index(conf, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return pd.DataFrame(
        {
            "bin": np.arange(n_bins),
            "lower": edges[:-1],
            "upper": edges[1:],
            "confidence": mean_conf,
            "accuracy": acc,
            "count": count.astype(np.int64),
        }
    )


def expected_calibration_error(y_true: Any, y_prob: Any, n_bins: int = 15) -> float:
    """ECE (Guo et al., 2017): ``sum_m |B_m|/n * |acc(B_m) - conf(B_m)|`` over equal-width bins
    of the top-class confidence.

    Args:
        y_true: True class indices, ``(N,)``.
        y_prob: Predicted probabilities, ``(N, K)``.
        n_bins: Equal-width confidence bins over [0, 1].

    Returns:
        The ECE (0 is perfectly calibrated).
    """
    table = reliability_table(y_true, y_prob, n_bins)
    used = table[table["count"] > 0]
    n = used["count"].sum()
    return float((used["count"] / n * (used["accuracy"] - used["confidence"]).abs()).sum())


def evaluate_predictions(
    y_true: Any, y_prob: Any, class_names: Sequence[str] = CLASS_NAMES, n_bins: int = 15
) -> dict[str, Any]:
    """All test metrics of one set of predictions, as a JSON-serialisable dict.

    Keys: ``accuracy, macro_f1, weighted_f1, ece, nll, n, per_class, confusion_matrix``.
    ``per_class`` maps each class name to ``precision, recall, f1, support`` and the confusion
    matrix (rows = true, columns = predicted) always has one row/column per class. ``macro_f1``
    follows scikit-learn's default and averages over classes present in ``y_true`` or the
    predictions; on EuroSAT test sets (every class present) that is all classes.

    Args:
        y_true: True class indices, ``(N,)``.
        y_prob: Predicted probabilities, ``(N, K)``.
        class_names: Names of the ``K`` classes, in index order.
        n_bins: Bins of the calibration error.

    Returns:
        The metrics.
    """
    class_names = tuple(class_names)
    y_true, y_prob = _check_inputs(y_true, y_prob, num_classes=len(class_names))
    k = len(class_names)
    labels = np.arange(k)
    y_pred = y_prob.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
        "ece": expected_calibration_error(y_true, y_prob, n_bins),
        # log_loss clips probabilities away from 0, so one confident mistake cannot make it inf.
        "nll": float(log_loss(y_true, y_prob, labels=labels)),
        "n": int(y_true.shape[0]),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
    }


def most_confident_mistakes(y_true: Any, y_prob: Any, k: int = 16) -> np.ndarray:
    """Indices of up to ``k`` misclassified samples, most confident wrong prediction first.

    Args:
        y_true: True class indices, ``(N,)``.
        y_prob: Predicted probabilities, ``(N, K)``.
        k: The most to return.

    Returns:
        Positions into ``y_true``.
    """
    y_true, y_prob = _check_inputs(y_true, y_prob)
    wrong = np.flatnonzero(y_prob.argmax(axis=1) != y_true)
    conf = y_prob[wrong].max(axis=1)
    # Stable sort: ties keep dataset order, so the figure is reproducible.
    return wrong[np.argsort(-conf, kind="stable")][: max(int(k), 0)]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def predict_proba(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, K)`` of a Keras model on uint8 images (no progress output).

    Args:
        model: A Keras model taking uint8 images.
        images: ``(N, H, W, C)`` uint8 images.
        batch_size: Images per call.

    Returns:
        Probabilities, float32.

    Raises:
        ValueError: ``images`` is not a batch.
    """
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, H, W, C), got shape {images.shape}")
    from .training import predict_batches  # imported on use: this module stays free of TensorFlow

    return predict_batches(model, images, batch_size)


def evaluate_model(model: Any, data: EuroSAT, batch_size: int = 256) -> tuple[dict[str, Any], np.ndarray]:
    """Predict ``data`` with ``model`` and score it: ``(evaluate_predictions(...), y_prob)``.

    Args:
        model: A Keras model taking uint8 images.
        data: The images and labels to score.
        batch_size: Images per call.

    Returns:
        The metrics and the predicted probabilities.
    """
    y_prob = predict_proba(model, data.images, batch_size=batch_size)
    return evaluate_predictions(data.labels, y_prob, data.class_names), y_prob


# --------------------------------------------------------------------------------------------
# A name that moved: Grad-CAM to `gradcam` (run records went to `runs`, with every caller)
# --------------------------------------------------------------------------------------------

#: Old name -> (module, new name). Chapter 04's executed notebook still calls ``E.grad_cam``;
#: an executed chapter's code must match its outputs, so the call moves to
#: ``eurosat_lib.gradcam`` when that chapter is next re-executed. New code imports gradcam.
_MOVED = {"grad_cam": ("gradcam", "grad_cam")}


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        import importlib

        module, new = _MOVED[name]
        return getattr(importlib.import_module(f"eurosat_lib.{module}"), new)
    raise AttributeError(f"module 'eurosat_lib.evaluation' has no attribute {name!r}")
