"""Sanity flags for a finished run: is its number a finding, or a broken run?

:func:`flags` reads a run's training history and evaluation metrics (the ``history`` and
``metrics`` of its ``record.json``) and returns the problems it can prove from them alone:

``"chance-level"``
    Some evaluated split's accuracy cannot be told apart from guessing: the **lower** end of its
    Wilson 95 % interval is at or below ``1 / num_classes + margin`` (default margin 2 points).
    In words: the data cannot show that the run beats chance by more than the margin. On 300
    images a 10-class run needs about 16 % accuracy to escape the flag; on 5,400 about 13 %.
``"diverged"``
    A training or validation loss is NaN or infinite, or the final training loss is above the
    run's *starting* training loss (first epoch of its first phase). Comparing with the run's
    start (not the phase's) catches a fine-tuning phase that blows up in its first step and
    then creeps down again, still far above where the run began.
``"not converged"``
    The run stopped while validation accuracy was still rising: the last epoch of its last phase
    that watched validation (the phase whose weights are the run's) is that phase's best **and**
    it gained more than the noise over the last ``window`` epochs, i.e.
    ``val[-1] - max(val[:-window]) > sqrt(2 p (1 - p) / n_eval)`` — one standard error of the
    difference between two accuracies measured on ``n_eval`` images (the images that phase
    watched: :func:`monitored_images`). A fine-tune still climbing back towards the head
    phase's accuracy when it stopped is not converged, though it never beat the head.

The module does no I/O and imports only numpy, so run writers, reports and tests can all call it.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Mapping, Sequence

import numpy as np

__all__ = ["FLAGS", "FLAG_TEXT", "best_epoch", "flags", "flags_from_record", "history_series", "monitored_images",
           "wilson_interval"]

#: Every flag :func:`flags` can return, in the order it returns them.
FLAGS = ("chance-level", "diverged", "not converged")

#: One line per flag for a reader (tables put the flag beside the number, prose explains it).
FLAG_TEXT: dict[str, str] = {
    "chance-level": "accuracy within noise of guessing (10 classes: 10 %): the run learned nothing usable",
    "diverged": "the training loss ended above where it started (or became NaN): the optimisation blew up",
    "not converged": "validation accuracy was still rising when training stopped: the number understates what the setup can reach",
}

_Z95 = 1.959963984540054


def wilson_interval(accuracy: float, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion (default 95 %).

    Args:
        accuracy: observed proportion in [0, 1].
        n: number of trials (images); must be >= 1.
        z: normal quantile (1.96 for 95 %).

    Returns:
        ``(low, high)``.

    Raises:
        ValueError: if ``n`` < 1 or ``accuracy`` is outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"wilson_interval needs n >= 1 evaluated images, got {n}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"wilson_interval needs an accuracy in [0, 1], got {accuracy}")
    denom = 1.0 + z * z / n
    centre = (accuracy + z * z / (2 * n)) / denom
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def history_series(history: Any, key: str) -> list[float]:
    """One metric's values over all phases, in training order.

    Args:
        history: a record's ``history`` — a list of ``{"name": ..., "history": {key: [...]}}``
            phases — or a single ``{key: [...]}`` mapping (one Keras ``History.history``).
        key: the metric, e.g. ``"loss"`` or ``"val_accuracy"``.

    Returns:
        The concatenated values as floats (empty if no phase recorded ``key``).
    """
    if history is None:
        return []
    if isinstance(history, Mapping):
        phases: Sequence[Mapping[str, Any]] = [history.get("history", history)]
    else:
        phases = [ph.get("history", ph) if isinstance(ph, Mapping) else {} for ph in history]
    out: list[float] = []
    for ph in phases:
        values = ph.get(key)
        if values is not None:  # lists from JSON, or arrays straight from a Keras History
            out.extend(np.asarray(values, dtype=float).ravel().tolist())
    return out


def best_epoch(
    history: Any,
    key: str = "val_accuracy",
    *,
    last_phase: bool = False,
    finite: bool = False,
    ties: Literal["first", "last"] = "first",
) -> tuple[int, int] | None:
    """The epoch at which one metric peaked, and how many epochs recorded it.

    Args:
        history: as for :func:`history_series` (a record's list of phases, or one mapping).
        key: the metric, e.g. ``"val_accuracy"``.
        last_phase: read only the last phase that recorded ``key`` (the phase whose weights are
            the run's) instead of every phase one after the other.
        finite: drop NaN and infinite values first (the epoch and the count are then over the
            finite values). Otherwise they stay, and a NaN counts as the highest value
            (``numpy.argmax``'s rule).
        ties: which epoch a maximum reached more than once gives: ``"first"`` (the earliest), or
            ``"last"`` (the latest: the result is ``(n, n)`` exactly when the last value is a maximum).

    Returns:
        ``(best, n)``: the 1-based epoch of the maximum and the number of values, or None when
        there is no value. A caller that needs a curve (two epochs or more) checks ``n``.

    Raises:
        ValueError: if ``ties`` is neither ``"first"`` nor ``"last"``.
    """
    if ties not in ("first", "last"):
        raise ValueError(f"best_epoch ties must be 'first' or 'last', got {ties!r}")
    values = np.asarray(history_series(_last_watched_phase(history, key) if last_phase else history, key), dtype=float)
    if finite:
        values = values[np.isfinite(values)]
    n = len(values)
    if n == 0:
        return None
    best = int(np.argmax(values)) if ties == "first" else n - 1 - int(np.argmax(values[::-1]))
    return best + 1, n


def _accuracies(metrics: Mapping[str, Any] | None) -> list[tuple[str, float, int | None]]:
    out = []
    for split, m in (metrics or {}).items():
        if isinstance(m, Mapping) and isinstance(m.get("accuracy"), (int, float)):
            out.append((split, float(m["accuracy"]), m.get("n")))
    return out


def flags(
    history: Any,
    metrics: Mapping[str, Any] | None,
    num_classes: int = 10,
    n_eval: int | None = None,
    *,
    margin: float = 0.02,
    window: int = 3,
) -> list[str]:
    """The sanity flags a run earns from its own history and metrics (see the module docstring).

    Args:
        history: the record's ``history`` (list of phases) or one ``{metric: [values]}`` mapping.
        metrics: ``{split: {"accuracy": float, "n": int, ...}}`` as in a record's ``metrics``.
            A split without ``n`` is judged with ``n_eval`` images (or skipped if neither is known).
        num_classes: number of classes (chance = 1 / num_classes).
        n_eval: images behind the history's ``val_accuracy`` curve; default ``metrics["val"]["n"]``.
        margin: how far above chance (as a proportion) a run must be shown to be.
        window: epochs over which a still-rising validation curve is measured.

    Returns:
        The subset of :data:`FLAGS` that applies, in that order (empty: nothing wrong shown).

    Raises:
        ValueError: if ``num_classes`` < 2 or ``window`` < 1.
    """
    if num_classes < 2:
        raise ValueError(f"flags needs num_classes >= 2, got {num_classes}")
    if window < 1:
        raise ValueError(f"flags needs window >= 1 epoch, got {window}")
    out: list[str] = []
    chance = 1.0 / num_classes

    # chance-level: can the data show the run beats guessing by more than `margin`?
    for split, acc, n in _accuracies(metrics):
        n = n if isinstance(n, int) and n > 0 else n_eval
        if not n:
            continue
        if not math.isfinite(acc) or wilson_interval(min(max(acc, 0.0), 1.0), int(n))[0] <= chance + margin:
            out.append("chance-level")
            break

    # diverged: NaN/inf anywhere, or the run ends above its own starting loss.
    loss = history_series(history, "loss")
    val_loss = history_series(history, "val_loss")
    if any(not math.isfinite(v) for v in loss + val_loss) or (len(loss) >= 2 and loss[-1] > loss[0]):
        out.append("diverged")

    # not converged: best epoch is the last one and the last `window` epochs gained more than noise.
    # Judged on the last phase that watched validation: its weights are the run's, and a new phase
    # (fine-tuning after a head) starts from another regime, so a fine-tune still climbing back
    # towards the head's level stopped while improving although it never beat the head's best.
    val = history_series(_last_watched_phase(history), "val_accuracy")
    if n_eval is None:
        v = (metrics or {}).get("val")
        n_eval = v.get("n") if isinstance(v, Mapping) else None
    if len(val) >= 2 and n_eval and all(math.isfinite(x) for x in val):
        earlier = val[: max(1, len(val) - window)]
        p = min(max(val[-1], 0.0), 1.0)
        noise = math.sqrt(2 * p * (1 - p) / int(n_eval))
        if val[-1] >= max(val) and val[-1] - max(earlier) > noise:
            out.append("not converged")
    return out


def _last_watched_phase(history: Any, key: str = "val_accuracy") -> Any:
    """The last phase of a list of phases that recorded ``key`` (a single mapping as is)."""
    if history is None or isinstance(history, Mapping):
        return history
    watched = [ph for ph in history if isinstance(ph, Mapping) and history_series([ph], key)]
    return watched[-1:] if watched else []


def monitored_images(record: Mapping[str, Any]) -> int | None:
    """Validation images behind the last watched phase's ``val_accuracy`` curve, if the record says.

    A phase may watch a per-class subset of the validation split after each epoch
    (``val_n_per_class`` in its parameters) while the run is scored on all of it.

    Args:
        record: The parsed ``record.json``.

    Returns:
        ``val_n_per_class`` × classes of the last watched phase, or None (the validation split's
        count then applies).
    """
    k = int((record.get("model_info") or {}).get("num_classes") or 10)
    last = _last_watched_phase(record.get("history"))
    name = last[0].get("name") if isinstance(last, list) and last else None
    phases = [p for p in ((record.get("params") or {}).get("phases") or []) if isinstance(p, Mapping) and p.get("name") == name]
    per_class = phases[-1].get("val_n_per_class") if phases else None
    return int(per_class) * k if isinstance(per_class, int) and per_class > 0 else None


def flags_from_record(record: Mapping[str, Any]) -> list[str]:
    """:func:`flags` of a loaded ``record.json`` (class count from ``model_info``, default 10).

    Args:
        record: The parsed ``record.json``.

    Returns:
        The run's flags, in :data:`FLAGS` order.
    """
    k = (record.get("model_info") or {}).get("num_classes") or 10
    return flags(record.get("history"), record.get("metrics"), num_classes=int(k), n_eval=monitored_images(record))

