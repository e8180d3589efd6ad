"""The comparison helper: known answers for the t interval, the paired bootstrap, the binomial
standard error, and verdict words only where the interval excludes zero."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from eurosat_lib import stats as S


def test_paired_t_interval_matches_the_textbook_and_scipy():
    a, b = [0.90, 0.80, 0.85], [0.80, 0.75, 0.80]
    d = S.paired_diff(a, b)
    # differences 0.10, 0.05, 0.05: mean 0.0667, sd 0.0289, t(0.975, 2) = 4.303 -> half-width 0.0717
    assert d.mean == pytest.approx(0.066667, abs=1e-6)
    assert d.high - d.mean == pytest.approx(4.302653 * 0.0288675 / math.sqrt(3), abs=1e-6)
    ref = sps.ttest_rel(a, b).confidence_interval(0.95)
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high))
    assert d.n == 3 and d.method == "t over seeds" and d.note == ""
    # +6.7 points on every seed's average, yet 3 seeds cannot exclude zero: no verdict word.
    assert d.low < 0 < d.high and d.verdict == "no measurable difference"


def test_paired_t_verdicts_and_the_two_seed_caveat():
    assert S.paired_diff([0.9, 0.91, 0.92, 0.90], [0.8, 0.82, 0.81, 0.80]).verdict == "better"
    assert S.paired_diff([0.8, 0.82, 0.81, 0.80], [0.9, 0.91, 0.92, 0.90]).verdict == "worse"
    two = S.paired_diff([0.86, 0.84], [0.82, 0.81])
    assert "2 seeds" in two.note and "12.7" in two.note
    assert two.high - two.mean == pytest.approx(12.7062 * np.std([0.04, 0.03], ddof=1) / math.sqrt(2), rel=1e-4)
    one = S.paired_diff([0.9], [0.8])
    assert one.method == "single pair" and math.isnan(one.low) and one.verdict == "no measurable difference"


def test_paired_diff_refuses_unpaired_or_broken_input():
    with pytest.raises(ValueError, match="one value per seed"):
        S.paired_diff([0.9, 0.8], [0.8])
    with pytest.raises(ValueError, match="at least one"):
        S.paired_diff([], [])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_diff([0.9, float("nan")], [0.8, 0.7])


def test_bootstrap_over_images_known_answer():
    # 1,000 images; B is right on a subset of A's correct images, so per image A - B is 1 on 50
    # images and 0 elsewhere: difference 0.05 with standard error sqrt(0.05 * 0.95 / 1000) = 0.0069.
    n = 1000
    a = np.zeros(n, bool)
    a[:900] = True
    b = a.copy()
    b[850:900] = False
    d = S.bootstrap_diff(a, b, n_resamples=3000, seed=1)
    assert d.mean == pytest.approx(0.05)
    se = math.sqrt(0.05 * 0.95 / n)
    assert d.low == pytest.approx(0.05 - 1.96 * se, abs=0.004)
    assert d.high == pytest.approx(0.05 + 1.96 * se, abs=0.004)
    assert d.verdict == "better" and d.method == "bootstrap over images" and d.n == n
    # The same seed gives the same interval; swapped arms give the mirrored verdict.
    assert S.bootstrap_diff(a, b, n_resamples=3000, seed=1) == d
    assert S.bootstrap_diff(b, a, n_resamples=3000, seed=1).verdict == "worse"


def test_bootstrap_is_paired_not_independent():
    # Two runs that disagree on only 6 of 400 images (3 each way): no difference, a narrow interval.
    rng = np.random.default_rng(0)
    a = rng.random(400) < 0.7
    b = a.copy()
    flip_a = np.flatnonzero(a)[:3]
    flip_b = np.flatnonzero(~a)[:3]
    b[flip_a], b[flip_b] = False, True
    d = S.bootstrap_diff(a, b, seed=0)
    assert d.mean == 0 and d.verdict == "no measurable difference"
    assert d.high - d.low < 0.03  # unpaired, the interval would be ~13 points wide (2 x 1.96 x SE of each)
    same = S.bootstrap_diff(a, a)
    assert (same.low, same.high) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same images"):
        S.bootstrap_diff(a, b[:-1])


def test_binomial_se_known_values():
    assert S.binomial_se(0.5, 100) == pytest.approx(0.05)
    assert S.binomial_se(0.86, 300) == pytest.approx(0.02003, abs=1e-5)  # chapter 5's validation set
    assert S.binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="n >= 1"):
        S.binomial_se(0.5, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        S.binomial_se(1.5, 10)


@pytest.mark.parametrize(
    ("diff", "ci", "word"),
    [
        (0.02, (0.001, 0.04), "better"),
        (-0.02, (-0.04, -0.001), "worse"),
        (0.02, (-0.001, 0.04), "no measurable difference"),
        (0.0, (0.0, 0.0), "no measurable difference"),  # touching zero is not excluding it
        (0.05, (math.nan, math.nan), "no measurable difference"),
    ],
)
def test_verdict_words_only_when_the_interval_excludes_zero(diff, ci, word):
    assert S.verdict(diff, ci) == word
    assert word in S.VERDICTS


def test_format_diff():
    d = S.Diff(0.021, -0.004, 0.046, 3, "t over seeds")
    assert S.format_diff(d) == "+2.1 points (95 % CI -0.4 to +4.6, 3 seeds)"
    assert S.format_diff(S.paired_diff([0.9], [0.8])) == "+10.0 points (1 seed, no interval)"
    assert "5,400 images" in S.format_diff(S.Diff(0.01, 0.0, 0.02, 5400, "bootstrap over images"))


def test_moments_and_unpaired_intervals_known_answers():
    d = S.paired_diff([0.90, 0.80, 0.85], [0.80, 0.75, 0.80])
    m = S.diff_from_moments(d.mean, float(np.std([0.10, 0.05, 0.05], ddof=1)), 3)
    assert (m.low, m.high) == pytest.approx((d.low, d.high))
    assert S.diff_from_moments(0.1, float("nan"), 1).method == "single pair"
    # 96.8 % vs 93.5 % on 5,400 images each: SE = sqrt(.968*.032/5400 + .935*.065/5400) = 0.004122
    u = S.independent_diff(0.968, 5400, 0.935, 5400)
    assert u.mean == pytest.approx(0.033)
    assert u.high - u.mean == pytest.approx(1.959964 * 0.004122, abs=2e-6)
    assert u.verdict == "better" and "unpaired" in S.format_diff(u)
    # 88.3 % vs 86.7 % on 300 validation images: within noise
    assert S.independent_diff(0.8833, 300, 0.8667, 300).verdict == "no measurable difference"


def test_evaluation_noise_widens_the_seed_interval():
    # Two seeds that agree exactly: seed spread alone gives a zero-width interval (an artefact).
    # With the 1,000 shared validation images the evaluation noise is a known binomial variance
    # (normal quantile): +4.9 +- 1.96 * sqrt(.887 * .113 / 1000 + .838 * .162 / 1000).
    a, b = [0.888, 0.886], [0.839, 0.837]
    bare = S.paired_diff(a, b)
    assert bare.high - bare.low == pytest.approx(0.0, abs=1e-12)
    d = S.paired_diff(a, b, n_eval=1000)
    se = math.sqrt(0.887 * 0.113 / 1000 + 0.838 * 0.162 / 1000)
    assert d.high - d.mean == pytest.approx(1.959964 * se, rel=1e-4)
    assert d.verdict == "better"
    # The same gap measured on 50 images is within noise.
    assert S.paired_diff(a, b, n_eval=50).verdict == "no measurable difference"
    # Seed spread dominating: the quantile approaches t with n - 1 df (12.7 for two seeds).
    wide = S.paired_diff([0.90, 0.80], [0.85, 0.85], n_eval=10**9)
    assert wide.high - wide.mean == pytest.approx(12.7062 * 0.05, rel=1e-3)


def test_evaluation_noise_never_narrows_the_seed_interval():
    # 3 seeds whose differences spread by sd 0.02, evaluation noise of the same size as the seed
    # part: Welch-Satterthwaite gives df = 8 and 2.31 * sqrt(2) * se < t(2) * se = 4.30 * se, so the
    # "widened" interval would be narrower than the seed-only one; it must not be.
    from scipy import stats

    sd, n = 0.02, 3
    v_seed = sd * sd / n
    seed_only = S.diff_from_moments(0.01, sd, n)
    assert seed_only.high - seed_only.mean == pytest.approx(float(stats.t.ppf(0.975, 2)) * math.sqrt(v_seed))
    widened = S.diff_from_moments(0.01, sd, n, eval_var=v_seed)
    assert widened.high - widened.mean >= seed_only.high - seed_only.mean - 1e-12
    # Far more evaluation noise than seed spread: the evaluation term decides (normal-like quantile).
    big = S.diff_from_moments(0.01, sd, n, eval_var=100 * v_seed)
    assert big.high - big.mean > seed_only.high - seed_only.mean
    assert big.high - big.mean < 1.99 * math.sqrt(101 * v_seed)


def test_an_interval_end_that_excludes_zero_never_prints_as_zero():
    d = S.Diff(-0.029, -0.058, -0.0004, 5, "t over seeds")
    assert d.verdict == "worse"
    assert S.format_diff(d) == "-2.9 points (95 % CI -5.8 to -0.04, 5 seeds)"
    assert S.format_diff(S.Diff(0.02, 0.0, 0.04, 3, "t over seeds")) == "+2.0 points (95 % CI +0.0 to +4.0, 3 seeds)"


def test_eval_half_width_is_the_unpaired_binomial_term_alone():
    # 87.5 % on 5,400 images in both arms: 1.96 * sqrt(2 * .875 * .125 / 5400) = 1.25 points, whatever the seeds
    assert S.eval_half_width(0.875, 0.875, 5400) == pytest.approx(1.959964 * math.sqrt(2 * 0.875 * 0.125 / 5400), rel=1e-6)
    assert S.eval_half_width(1.2, 0.875, 5400) == pytest.approx(S.eval_half_width(1.0, 0.875, 5400))  # clipped
    # the term paired_diff adds: two seeds that agree exactly get exactly it (normal quantile, infinite df)
    d = S.paired_diff([0.888, 0.886], [0.839, 0.837], n_eval=1000)
    assert d.high - d.mean == pytest.approx(S.eval_half_width(0.887, 0.838, 1000), rel=1e-4)
