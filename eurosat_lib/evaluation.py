"""Evaluation: metrics, calibration, run records and Grad-CAM.

Everything here works on plain arrays — integer labels ``y_true`` ``(N,)`` and class
probabilities ``y_prob`` ``(N, K)`` — so the same code scores a Keras model, a saved prediction
file or a toy example::

    metrics, y_prob = evaluate_model(model, test)           # metrics: JSON-serialisable dict
    write_run_record(run_dir, params=params, metrics={"test": metrics}, history=history,
                     timings={"fit_seconds": 812.4}, model_info=models.describe_model(model))
    df = gather_runs("runs")                                  # one row per finished run

A run is a folder: parameters in, ``record.json`` out. :func:`gather_runs` turns a tree of
runs into one table for the book's comparisons.

Keras is imported only inside the functions that touch models: metrics, calibration and run
records are plain NumPy/pandas/scikit-learn and work on saved predictions without a backend.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_recall_fscore_support,
)

from . import __version__
from ._io import write_json_atomic
from .data import CLASS_NAMES, EuroSAT

__all__ = [
    "RUN_RECORD",
    "RUN_STATUSES",
    "combine_history",
    "environment",
    "evaluate_model",
    "evaluate_predictions",
    "expected_calibration_error",
    "gather_runs",
    "grad_cam",
    "most_confident_mistakes",
    "predict_proba",
    "read_run_record",
    "reliability_table",
    "write_run_record",
]

#: File name of a run's record inside its run folder.
RUN_RECORD = "record.json"
RUN_STATUSES = ("complete", "running", "failed")
#: Bump when the record layout changes incompatibly.
RECORD_SCHEMA = 1
#: Tolerance for "rows sum to 1": float32 softmax outputs are off by ~1e-6, never by 1e-3.
_PROB_ATOL = 1e-3
#: Per-split metrics copied into :func:`gather_runs` columns as ``<split>_<name>``.
_SUMMARY_METRICS = ("accuracy", "macro_f1", "weighted_f1", "ece", "nll", "n")


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
    of the top-class confidence."""
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
    """Indices of up to ``k`` misclassified samples, most confident wrong prediction first."""
    y_true, y_prob = _check_inputs(y_true, y_prob)
    wrong = np.flatnonzero(y_prob.argmax(axis=1) != y_true)
    conf = y_prob[wrong].max(axis=1)
    # Stable sort: ties keep dataset order, so the figure is reproducible.
    return wrong[np.argsort(-conf, kind="stable")][: max(int(k), 0)]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def predict_proba(model: Any, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Class probabilities ``(N, K)`` of a Keras model on uint8 images (no progress output)."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"images must be a batch (N, H, W, C), got shape {images.shape}")
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0))


def evaluate_model(model: Any, data: EuroSAT, batch_size: int = 256) -> tuple[dict[str, Any], np.ndarray]:
    """Predict ``data`` with ``model`` and score it: ``(evaluate_predictions(...), y_prob)``."""
    y_prob = predict_proba(model, data.images, batch_size=batch_size)
    return evaluate_predictions(data.labels, y_prob, data.class_names), y_prob


# --------------------------------------------------------------------------------------------
# Training histories
# --------------------------------------------------------------------------------------------


def combine_history(history: Any) -> tuple[dict[str, list[float]], list[int], list[str]]:
    """Merge a training history into one epoch-indexed dict.

    Accepts a Keras ``History``, a dict of lists (``{"loss": [...], "val_loss": [...]}``) or a
    list of phases, each a dict of lists or ``{"name": ..., "history": {...}}``. Returns
    ``(merged, boundaries, phase_names)`` where ``boundaries[i]`` is the number of epochs
    before phase ``i + 1`` starts (e.g. where fine-tuning began). Metrics missing from a phase
    are NaN there, so every list has the same length.
    """
    if hasattr(history, "history") and isinstance(history.history, Mapping):
        history = history.history
    if isinstance(history, Mapping):
        phases = [history]
    elif isinstance(history, Sequence) and not isinstance(history, (str, bytes)):
        phases = list(history)
    else:
        raise TypeError(f"history must be a dict of lists or a list of phase dicts, got {type(history).__name__}")
    names: list[str] = []
    parts: list[Mapping[str, Sequence[float]]] = []
    for i, phase in enumerate(phases):
        if hasattr(phase, "history") and isinstance(phase.history, Mapping):
            phase = phase.history
        if not isinstance(phase, Mapping):
            raise TypeError(f"history phase {i} must be a dict, got {type(phase).__name__}")
        if "history" in phase and isinstance(phase["history"], Mapping):
            names.append(str(phase.get("name", f"phase {i + 1}")))
            parts.append(phase["history"])
        else:
            names.append(f"phase {i + 1}")
            parts.append(phase)
    keys: list[str] = []
    for part in parts:
        keys += [k for k in part if k not in keys]
    merged: dict[str, list[float]] = {k: [] for k in keys}
    boundaries: list[int] = []
    total = 0
    for i, part in enumerate(parts):
        lengths = {len(v) for v in part.values()}
        if len(lengths) > 1:
            raise ValueError(f"history phase {i}: metric lists differ in length {sorted(lengths)}")
        n = lengths.pop() if lengths else 0
        if i > 0:
            boundaries.append(total)
        for k in keys:
            merged[k] += [float(v) for v in part[k]] if k in part else [math.nan] * n
        total += n
    return merged, boundaries, names


# --------------------------------------------------------------------------------------------
# Run records: a run is a folder, parameters in, record.json out
# --------------------------------------------------------------------------------------------


def _jsonable(obj: Any, where: str = "record") -> Any:
    """Plain-JSON copy of ``obj``: numpy -> Python, tuples -> lists, NaN/inf -> None.

    Strict JSON has no NaN; a diverged loss is recorded as null so every JSON reader copes.
    Checked before anything touches the disk, so a bad value never costs the old record.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist(), where)
    if isinstance(obj, (Path, os.PathLike)):
        return os.fspath(obj)
    if hasattr(obj, "history") and isinstance(obj.history, Mapping):  # a Keras History
        return _jsonable(obj.history, where)
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    raise TypeError(f"{where}: {type(obj).__name__} is not JSON-serialisable; record plain numbers, strings, lists or dicts")


def _package_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpu_names() -> list[str] | None:
    """GPU names from an already-imported backend; ``None`` means "not known".

    Never imports TensorFlow or JAX itself: that takes seconds and may grab the GPU.
    """
    backend = _keras_backend() or "tensorflow"
    try:
        # Ask the backend that runs the models; TF may be imported alongside JAX for tf.data.
        if backend == "jax" and "jax" in sys.modules:
            return [str(d.device_kind) for d in sys.modules["jax"].devices() if d.platform == "gpu"]
        if backend == "torch" and "torch" in sys.modules:
            torch = sys.modules["torch"]
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if "tensorflow" in sys.modules:
            tf = sys.modules["tensorflow"]
            names = []
            for dev in tf.config.list_physical_devices("GPU"):
                details = tf.config.experimental.get_device_details(dev)
                names.append(str(details.get("device_name", dev.name)))
            return names
    except Exception:  # device listing is best effort; a record must still be written
        pass
    return None


def _keras_backend() -> str | None:
    if "keras" in sys.modules:
        try:
            return str(sys.modules["keras"].backend.backend())
        except Exception:
            return None
    return os.environ.get("KERAS_BACKEND")


def environment() -> dict[str, Any]:
    """Where and when a run happened: versions, platform, CPU, GPUs, UTC timestamp.

    Host and user names are deliberately left out: records are shared with the book.
    """
    return {
        "eurosat_lib": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "keras": _package_version("keras"),
        "keras_backend": _keras_backend(),
        "tensorflow": _package_version("tensorflow", "tensorflow-cpu", "tf-nightly"),
        "jax": _package_version("jax"),
        "torch": _package_version("torch"),
        "scikit_learn": _package_version("scikit-learn"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "gpus": _gpu_names(),
        "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _record_path(run_dir: str | os.PathLike) -> Path:
    p = Path(run_dir)
    return p if p.name == RUN_RECORD else p / RUN_RECORD


def write_run_record(
    run_dir: str | os.PathLike,
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, Any] | None = None,
    history: Any = None,
    timings: Mapping[str, Any] | None = None,
    model_info: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    status: str = "complete",
) -> Path:
    """Write ``<run_dir>/record.json`` atomically and return its path.

    ``metrics`` layout: ``{"test": evaluate_predictions(...), "val": {...}}`` (any split names).
    ``history``: dict of lists or list of phase dicts (see :func:`combine_history`).
    ``timings``: seconds, e.g. ``{"fit_seconds": 812.4, "eval_seconds": 9.1}``; top-level
    ``*_seconds`` keys are summed into ``total_seconds`` unless that key is given.
    ``model_info``: ``eurosat_lib.models.describe_model(model)`` (parameter counts under
    ``"params"``) or any dict with ``total_params``/``trainable_params``.
    Write ``status="running"`` at the start of a run and ``"complete"`` (or ``"failed"``) at
    the end; readers only ever see a whole record.
    """
    if status not in RUN_STATUSES:
        raise ValueError(f"status must be one of {RUN_STATUSES}, got {status!r}")
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict, got {type(params).__name__}")
    record = _jsonable(
        {
            "schema": RECORD_SCHEMA,
            "status": status,
            "params": params,
            "metrics": metrics,
            "history": history,
            "timings": timings or {},
            "model_info": model_info,
            "extra": extra or {},
            "environment": environment(),
        }
    )
    path = _record_path(run_dir)
    write_json_atomic(path, record)
    return path


def run_model_path(run_dir: str | os.PathLike) -> Path:
    """``run_dir/model.keras``, or FileNotFoundError saying why it may be missing (no Keras import)."""
    path = Path(run_dir) / "model.keras"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist: the run did not save a model (save_model=False), did not finish, "
            "or its folder was copied without model files (they are not committed). Re-run it."
        )
    return path


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Read a run's ``record.json`` (pass the run folder or the file itself)."""
    path = _record_path(run_dir)
    if not path.is_file():
        raise FileNotFoundError(f"run record {path} does not exist; was the run finished with write_run_record()?")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"run record {path} is not valid JSON ({e}); delete the run folder and re-run it") from e
    if not isinstance(record, dict) or "status" not in record or "params" not in record:
        raise ValueError(f"run record {path} lacks 'status'/'params'; it was not written by write_run_record()")
    return record


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list):
            out[key] = json.dumps(v)  # hashable and readable; lists rarely matter for grouping
        else:
            out[key] = v
    return out


def _summary_row(run: str, record: Mapping[str, Any]) -> dict[str, Any]:
    env = record.get("environment") or {}
    row: dict[str, Any] = {
        "run": run,
        "status": record.get("status"),
        "timestamp": env.get("timestamp"),
        "keras_backend": env.get("keras_backend"),
    }
    reserved = set(row)
    for k, v in _flatten(record.get("params") or {}).items():
        row[f"param.{k}" if k in reserved else k] = v
    for split, m in (record.get("metrics") or {}).items():
        if isinstance(m, Mapping):
            for name in _SUMMARY_METRICS:
                if name in m:
                    row[f"{split}_{name}"] = m[name]
    # eurosat_lib.models.describe_model nests counts as {"params": {"total", "trainable", ...}}.
    info = record.get("model_info") or {}
    counts = info.get("params") if isinstance(info.get("params"), Mapping) else {}
    for name in ("total", "trainable"):
        value = counts.get(name, info.get(f"{name}_params"))
        if value is not None:
            row[f"{name}_params"] = value
    timings = record.get("timings") or {}
    flat_t = {k: v for k, v in _flatten(timings).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for k, v in flat_t.items():
        row[k if k not in row else f"timing.{k}"] = v
    if "total_seconds" not in flat_t:
        # Additive durations are the top-level "*_seconds" keys; rates and means are not summed.
        parts = [v for k, v in timings.items() if k.endswith("_seconds") and isinstance(v, (int, float))]
        row["total_seconds"] = float(sum(parts)) if parts else math.nan
    return row


def gather_runs(
    root: str | os.PathLike, pattern: str = f"**/{RUN_RECORD}", include_incomplete: bool = False
) -> pd.DataFrame:
    """One row per run record under ``root``, sorted by run path.

    Columns: ``run`` (folder relative to ``root``), ``status``, ``timestamp``,
    ``keras_backend``, every ``params`` key (nested keys joined with ``.``), ``<split>_<metric>``
    for ``accuracy, macro_f1, weighted_f1, ece, nll, n`` of each split in ``metrics`` (so
    ``test_accuracy``, ``val_ece``, ...), ``total_params``, ``trainable_params``, the numeric
    ``timings`` and ``total_seconds``. Runs whose status is not ``"complete"`` are skipped
    unless ``include_incomplete``; unreadable records are skipped with a warning.
    """
    root = Path(root)
    rows = []
    for path in sorted(root.glob(pattern)):
        try:
            record = read_run_record(path)
        except (OSError, ValueError) as e:
            warnings.warn(f"skipping unreadable run record: {e}", stacklevel=2)
            continue
        if record.get("status") != "complete" and not include_incomplete:
            continue
        rows.append(_summary_row(path.parent.relative_to(root).as_posix() or ".", record))
    if not rows:
        return pd.DataFrame(columns=["run", "status", "timestamp", "keras_backend"])
    return pd.DataFrame(rows).sort_values("run", kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Grad-CAM
# --------------------------------------------------------------------------------------------


def _split_at_backbone(model: Any) -> tuple[list[Any], Any, list[Any]]:
    """``(stem layers, backbone, head layers)`` of a model following the models contract.

    A nested model's ``.output`` belongs to its own inner graph in Keras 3, so a sub-model
    ``Model(model.inputs, backbone.output)`` is "not connected". The contract's graph is a
    chain, so the layers before and after the backbone are simply called in order.
    """
    import keras

    try:
        backbone = model.get_layer("backbone")
    except ValueError as e:
        raise ValueError(
            "grad_cam needs a model with a nested layer named 'backbone' whose output is the last "
            "conv feature map (as built by eurosat_lib.models)"
        ) from e
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    i = layers.index(backbone)
    return layers[:i], backbone, layers[i + 1 :]


def _is_softmax_dense(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.layers.Dense) and layer.activation is keras.activations.softmax


def _head_scores(head: Sequence[Any], features: Any) -> Any:
    """Run the head on a feature map; the class score is the logit, as in Selvaraju et al.

    Gradients of the softmax output shrink as the model grows confident and mix in the other
    classes, so a final softmax Dense is applied without its activation.
    """
    from keras import ops

    x = features
    for layer in head[:-1]:
        x = layer(x, training=False)
    last = head[-1]
    if _is_softmax_dense(last):
        x = ops.matmul(x, last.kernel)
        return ops.add(x, last.bias) if last.use_bias else x
    return last(x, training=False)


def _score_gradients(head_fn: Callable[[Any], Any], features: Any, class_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(scores (B, K), d score[class_index] / d features)`` with the active Keras backend.

    The one place that knows about backends: Keras 3 has no backend-neutral gradient API.
    """
    import keras
    from keras import ops

    backend = keras.backend.backend()
    def picked(scores: Any) -> Any:
        mask = ops.one_hot(ops.convert_to_tensor(class_index, dtype="int32"), ops.shape(scores)[-1], dtype=scores.dtype)
        return ops.sum(scores * mask)

    if backend == "tensorflow":
        import tensorflow as tf

        features = tf.convert_to_tensor(features)
        with tf.GradientTape() as tape:
            tape.watch(features)
            scores = head_fn(features)
            target = picked(scores)
        grads = tape.gradient(target, features)
    elif backend == "jax":
        import jax

        def f(feats: Any) -> tuple[Any, Any]:
            scores = head_fn(feats)
            return picked(scores), scores

        (_, scores), grads = jax.value_and_grad(f, has_aux=True)(features)
    elif backend == "torch":
        features = features.detach().requires_grad_(True)
        scores = head_fn(features)
        picked(scores).backward()
        grads = features.grad
        scores = scores.detach()
    else:
        raise NotImplementedError(f"grad_cam does not support the {backend!r} Keras backend")
    return ops.convert_to_numpy(scores), ops.convert_to_numpy(grads)


def grad_cam(
    model: Any, images: np.ndarray, class_index: int | Sequence[int] | np.ndarray | None = None, batch_size: int = 64
) -> np.ndarray:
    """Grad-CAM heatmaps (Selvaraju et al., 2017), ``(N, H, W)`` in ``[0, 1]`` at image size.

    ``class_index``: ``None`` explains each image's predicted class; an int explains that class
    for every image; a sequence gives one class per image. The model must follow the
    ``eurosat_lib.models`` contract: uint8 input, a nested ``"backbone"`` whose output is the
    last conv feature map, then a chain of head layers ending in ``"predictions"``. An image
    with no positive evidence for the class gets an all-zero map.
    """
    from keras import ops

    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C) or one (H, W, C) image, got shape {images.shape}")
    n, height, width = images.shape[:3]
    stem, backbone, head = _split_at_backbone(model)
    if not head:
        raise ValueError("grad_cam: the model has no layers after 'backbone'")
    if class_index is None:
        targets = None
    else:
        targets = np.broadcast_to(np.asarray(class_index, dtype=np.int64), (n,)).copy()
    input_dtype = model.inputs[0].dtype
    out = np.empty((n, height, width), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        x = ops.convert_to_tensor(batch, dtype=input_dtype)
        expected = ops.convert_to_numpy(model(x, training=False))
        for layer in stem:
            x = layer(x, training=False)
        features = backbone(x, training=False)
        if len(ops.shape(features)) != 4:
            raise ValueError(f"grad_cam: 'backbone' must output a (B, h, w, C) feature map, got shape {ops.shape(features)}")
        idx = expected.argmax(axis=1) if targets is None else targets[start : start + len(batch)]
        if idx.min() < 0 or idx.max() >= expected.shape[1]:
            raise ValueError(f"class_index must be in [0, {expected.shape[1] - 1}], got {idx.min()}..{idx.max()}")
        scores, grads = _score_gradients(lambda f: _head_scores(head, f), features, idx)
        # Guard against models that are not a plain chain: the manual pass must reproduce them.
        probs = ops.convert_to_numpy(ops.softmax(scores)) if _is_softmax_dense(head[-1]) else scores
        if probs.shape != expected.shape or not np.allclose(probs, expected, atol=1e-3):
            raise ValueError(
                "grad_cam: running the layers around 'backbone' in order does not reproduce the model's "
                "output; the model does not follow the eurosat_lib.models contract (a chain of layers)"
            )
        feats = ops.convert_to_numpy(features).astype(np.float32)
        weights = grads.mean(axis=(1, 2))  # (B, C): global-average-pooled gradients
        cam = np.maximum(np.einsum("bhwc,bc->bhw", feats, weights), 0.0)
        cam = ops.convert_to_numpy(ops.image.resize(cam[..., None], (height, width), interpolation="bilinear"))[..., 0]
        cam = np.maximum(cam, 0.0)
        peak = cam.max(axis=(1, 2), keepdims=True)
        out[start : start + len(batch)] = np.where(peak > 0, cam / np.where(peak > 0, peak, 1.0), 0.0)
    return np.clip(out, 0.0, 1.0)
