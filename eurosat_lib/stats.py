"""Comparisons with their uncertainty: one place decides how the book states a difference.

* :func:`paired_diff` — two arms run with the same seeds (same training images per seed):
  the mean of the per-seed differences with a Student-t 95 % interval (n - 1 degrees of
  freedom). With two seeds the t quantile is 12.7, so the interval is wide — which is the
  honest answer; :attr:`Diff.note` says so. With one seed there is no interval.
* :func:`bootstrap_diff` — two single runs scored on the *same* test images: the accuracy
  difference with a paired percentile bootstrap over images (``scipy.stats.bootstrap``,
  ``paired=True``) on the per-image correctness.
* :func:`independent_diff` — two accuracies whose per-image predictions were not kept: a normal
  interval from both binomial standard errors (conservative when the images are shared).
* :func:`binomial_se` — the standard error of one accuracy, ``sqrt(p (1 - p) / n)``.
* :func:`verdict` — ``"better"`` / ``"worse"`` only when the interval excludes zero,
  otherwise ``"no measurable difference"``. Prose may use those words only through it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["Diff", "VERDICTS", "binomial_se", "bootstrap_diff", "diff_from_moments", "eval_half_width", "format_diff",
           "independent_diff", "paired_diff", "verdict"]  # fmt: skip

#: The only words a comparison may end in.
VERDICTS = ("better", "worse", "no measurable difference")


@dataclass(frozen=True)
class Diff:
    """A difference ``a - b`` with its interval.

    Attributes:
        mean: the estimated difference (proportion units, e.g. 0.021 = 2.1 points).
        low: lower end of the interval (NaN when it cannot be computed, e.g. one seed).
        high: upper end of the interval.
        n: number of pairs (seeds) or images behind it.
        method: ``"t over seeds"``, ``"bootstrap over images"`` or ``"single pair"``.
        confidence: the interval's level (0.95).
        note: a caveat a reader needs (e.g. only two seeds), or ``""``.
    """

    mean: float
    low: float
    high: float
    n: int
    method: str
    confidence: float = 0.95
    note: str = ""

    @property
    def ci(self) -> tuple[float, float]:
        """The 95 % (or ``confidence``) interval as ``(low, high)``.

        Returns:
            The interval's ends.
        """
        return (self.low, self.high)

    @property
    def verdict(self) -> str:
        """``better``, ``worse`` or ``no measurable difference`` (:func:`verdict` of the mean and interval).

        Returns:
            The verdict word.
        """
        return verdict(self.mean, self.ci)


def binomial_se(p: float, n: int) -> float:
    """Standard error of an accuracy ``p`` measured on ``n`` images: ``sqrt(p (1 - p) / n)``.

    Args:
        p: The accuracy.
        n: Images it was measured on.

    Returns:
        The standard error.

    Raises:
        ValueError: if ``n`` < 1 or ``p`` is outside [0, 1].
    """
    if n < 1:
        raise ValueError(f"binomial_se needs n >= 1 images, got {n}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_se needs a proportion in [0, 1], got {p}")
    return math.sqrt(p * (1.0 - p) / n)


def eval_half_width(p_a: float, p_b: float, n_eval: int, confidence: float = 0.95) -> float:
    """Half-width of the evaluation images' own term in :func:`paired_diff`'s interval, alone.

    ``q * sqrt(p_a (1 - p_a) / n + p_b (1 - p_b) / n)`` with the normal quantile ``q``: the unpaired
    upper bound of two accuracies' sampling noise on ``n_eval`` shared images, which no number of
    seeds shrinks (a page can say when it alone is wider than a tolerance).

    Args:
        p_a: Arm A's accuracy (clipped to [0, 1]).
        p_b: Arm B's accuracy (clipped to [0, 1]).
        n_eval: Images each accuracy was measured on.
        confidence: The interval's level.

    Returns:
        The half-width, in proportion units.
    """
    from scipy import stats

    q = float(stats.norm.ppf(0.5 + confidence / 2))
    return q * math.hypot(binomial_se(min(max(p_a, 0.0), 1.0), int(n_eval)), binomial_se(min(max(p_b, 0.0), 1.0), int(n_eval)))


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, n_eval: int | None = None) -> Diff:
    """Mean paired difference ``a - b`` over seeds with a Student-t interval.

    Seeds share one evaluation set, so their spread shows training randomness only. Given
    ``n_eval`` (the images each accuracy was measured on), the evaluation set's own sampling
    noise is added to the variance of the mean, ``(p_a (1 - p_a) + p_b (1 - p_b)) / n_eval`` (its
    unpaired upper bound), with Welch-Satterthwaite degrees of freedom; this also keeps two
    seeds that happen to agree from giving a zero-width interval. The result is never narrower
    than the seed spread's own Student-t interval (:func:`diff_from_moments`).

    Args:
        a: one value per seed for arm A (e.g. test accuracy).
        b: the same seeds' values for arm B, in the same order.
        confidence: interval level.
        n_eval: images behind each accuracy (None: seed spread only).

    Returns:
        A :class:`Diff` (``method="t over seeds"``; with one pair, ``"single pair"`` and a NaN interval).

    Raises:
        ValueError: if the lengths differ, nothing is given, or a value is not finite.
    """
    from scipy import stats

    x, y = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"paired_diff needs one value per seed in both arms; got {x.size} and {y.size} (pair them by seed)")
    if x.size == 0:
        raise ValueError("paired_diff needs at least one pair of values")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("paired_diff got a NaN or infinite value; drop the failed run or fix its record")
    d = x - y
    eval_var = 0.0
    if n_eval is not None:
        pa, pb = float(np.clip(x.mean(), 0, 1)), float(np.clip(y.mean(), 0, 1))
        eval_var = binomial_se(pa, int(n_eval)) ** 2 + binomial_se(pb, int(n_eval)) ** 2
    sd = float(d.std(ddof=1)) if d.size > 1 else math.nan
    return diff_from_moments(float(d.mean()), sd, int(d.size), confidence, eval_var=eval_var)


def diff_from_moments(mean: float, sd: float, n: int, confidence: float = 0.95, eval_var: float = 0.0) -> Diff:
    """:func:`paired_diff` from the mean and sd (ddof=1) of ``n`` per-seed differences.

    For tables that kept only the summary of the paired differences, not the pairs themselves.
    ``eval_var`` is added to the squared standard error of the mean (see :func:`paired_diff`).

    Args:
        mean: Mean of the per-seed differences.
        sd: Their standard deviation (ddof=1); NaN with one seed.
        n: Number of seeds.
        confidence: The interval's coverage.
        eval_var: Variance of the evaluation noise added to the mean's.

    Returns:
        The difference with its t interval.

    Raises:
        ValueError: if ``n`` < 1.
    """
    from scipy import stats

    if n < 1:
        raise ValueError(f"diff_from_moments needs n >= 1 pairs, got {n}")
    if n == 1 or not math.isfinite(sd):
        return Diff(mean, math.nan, math.nan, n, "single pair", confidence, "one seed: no interval, no verdict")
    v_seed = sd * sd / n
    # Welch-Satterthwaite: the seed part is estimated (n - 1 df), the evaluation noise is known
    # from the binomial model (infinite df); the interval's df lie between the two.
    df = (v_seed + eval_var) ** 2 / (v_seed**2 / (n - 1)) if v_seed > 0 else math.inf
    q = float(stats.t.ppf(0.5 + confidence / 2, df)) if math.isfinite(df) else float(stats.norm.ppf(0.5 + confidence / 2))
    half = q * math.sqrt(v_seed + eval_var)
    # The evaluation noise is added to widen the interval. Welch-Satterthwaite raises the df with
    # it, and with few seeds the smaller t quantile can outweigh the added variance (3 seeds,
    # eval_var = v_seed: 2.31 * sqrt(2) < 4.30), which would make the "widened" interval narrower
    # than the seed spread's own t interval. Never report less than that.
    if v_seed > 0:
        half = max(half, float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * math.sqrt(v_seed))
    q1 = float(stats.t.ppf(0.5 + confidence / 2, 1))
    note = f"only 2 seeds: the seed spread carries a t quantile of up to {q1:.1f}, so the interval is wide" if n == 2 else ""
    return Diff(mean, mean - half, mean + half, n, "t over seeds", confidence, note)


def independent_diff(p_a: float, n_a: int, p_b: float, n_b: int, confidence: float = 0.95) -> Diff:
    """Difference of two accuracies measured on separate (or unpaired) image sets: normal interval.

    ``SE = sqrt(p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b)``. When both runs were in fact scored
    on the same images but their per-image predictions were not kept, this is conservative
    (pairing can only narrow the interval when the runs agree on most images).

    Args:
        p_a: Accuracy of arm a.
        n_a: Images arm a was scored on.
        p_b: Accuracy of arm b.
        n_b: Images arm b was scored on.
        confidence: The interval's coverage.

    Returns:
        ``p_a - p_b`` with its normal interval.

    Raises:
        ValueError: if an ``n`` < 1 or a proportion is outside [0, 1].
    """
    from scipy import stats

    se = math.hypot(binomial_se(p_a, n_a), binomial_se(p_b, n_b))
    q = float(stats.norm.ppf(0.5 + confidence / 2))
    m = p_a - p_b
    return Diff(m, m - q * se, m + q * se, min(n_a, n_b), "unpaired binomial", confidence,
                "per-image predictions not stored: unpaired interval (conservative)")  # fmt: skip


def bootstrap_diff(
    correct_a: Sequence[bool], correct_b: Sequence[bool], confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0
) -> Diff:
    """Accuracy difference of two runs on the same test images, with a paired bootstrap interval.

    Args:
        correct_a: per-image correctness (bool or 0/1) of run A.
        correct_b: the same images' correctness for run B, in the same order.
        confidence: interval level.
        n_resamples: bootstrap resamples.
        seed: random seed of the resampling (the interval is reproducible).

    Returns:
        A :class:`Diff` with ``method="bootstrap over images"`` (percentile interval).

    Raises:
        ValueError: if the arrays differ in length or are empty.
    """
    from scipy import stats

    x = np.asarray(correct_a, dtype=float).ravel()
    y = np.asarray(correct_b, dtype=float).ravel()
    if x.size != y.size:
        raise ValueError(f"bootstrap_diff needs both runs scored on the same images; got {x.size} and {y.size} predictions")
    if x.size == 0:
        raise ValueError("bootstrap_diff needs at least one image")
    m = float(x.mean() - y.mean())
    if np.array_equal(x, y):  # identical predictions: the difference is exactly zero, no spread
        return Diff(0.0, 0.0, 0.0, int(x.size), "bootstrap over images", confidence)
    res = stats.bootstrap(
        (x, y), lambda u, v, axis=-1: u.mean(axis=axis) - v.mean(axis=axis), paired=True, vectorized=True,
        confidence_level=confidence, n_resamples=n_resamples, method="percentile", rng=np.random.default_rng(seed),
    )  # fmt: skip
    ci = res.confidence_interval
    return Diff(m, float(ci.low), float(ci.high), int(x.size), "bootstrap over images", confidence)


def verdict(diff: float, ci: tuple[float, float]) -> str:
    """``"better"`` if the whole interval is above zero, ``"worse"`` if below, else ``"no measurable difference"``.

    Args:
        diff: the estimated difference (A - B, higher = A better).
        ci: its interval ``(low, high)``; NaN ends (no interval) never give a verdict word.

    Returns:
        One of :data:`VERDICTS`.
    """
    low, high = ci
    if not (math.isfinite(diff) and math.isfinite(low) and math.isfinite(high)):
        return "no measurable difference"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no measurable difference"


def format_diff(d: Diff, scale: float = 100.0, unit: str = " points", digits: int = 1) -> str:
    """``"+2.1 points (95 % CI −0.4 to +4.6, 3 seeds)"``; the interval is omitted when there is none.

    Args:
        d: The difference.
        scale: Factor applied before formatting (100: points).
        unit: Text after the number.
        digits: Decimals.

    Returns:
        The text.
    """
    head = f"{scale * d.mean:+.{digits}f}{unit}"
    what = {"t over seeds": f"{d.n} seeds", "bootstrap over images": f"{d.n:,} images",
            "unpaired binomial": f"{d.n:,} images, unpaired"}.get(d.method, "1 seed")  # fmt: skip
    if not (math.isfinite(d.low) and math.isfinite(d.high)):
        return f"{head} ({what}, no interval)"
    # An end that excludes zero must not print as zero ("-5.8 to -0.0: worse" reads as touching
    # it): add decimals until it shows its sign (at most 4).
    ends = []
    for v in (d.low, d.high):
        k = digits
        while v != 0 and round(scale * v, k) == 0 and k < digits + 3:
            k += 1
        ends.append(f"{scale * v:+.{k}f}")
    return f"{head} ({round(100 * d.confidence)} % CI {ends[0]} to {ends[1]}, {what})"
