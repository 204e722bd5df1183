"""The demo's paired comparison (demo/stats.py) against hand-worked examples, and its t quantiles against scipy."""

import math

import pytest

from prefix_rft_megatron.demo.stats import paired_difference, t975


def test_two_seeds_four_problems_by_hand():
    # seed 1: a solves 3 of 4, b 2 of 4; seed 2: both 2 of 4 -> per seed +0.25, 0
    a = [[1, 1, 0, 1], [1, 0, 0, 1]]
    b = [[0, 1, 0, 1], [0, 0, 1, 1]]
    d = paired_difference("a", "b", a, b)
    assert d.per_seed == [0.25, 0.0] and d.mean == 0.125
    assert d.se_seeds == pytest.approx(math.sqrt(0.25 ** 2 / 2) / math.sqrt(2), abs=1e-12)  # sd of (0.25, 0) / sqrt 2
    # per-problem differences, seeds averaged: 1, 0, -0.5, 0 -> sample sd sqrt(1.1875 / 3), / sqrt(4)
    assert d.se_problems == pytest.approx(math.sqrt(1.1875 / 3) / 2, abs=1e-12)
    half = 12.706 * math.sqrt(d.se_seeds ** 2 + d.se_problems ** 2)  # t(0.975, df=1)
    assert (d.low, d.high) == pytest.approx((0.125 - half, 0.125 + half), abs=1e-12)
    assert d.verdict == "no clear difference"


def test_a_consistent_gain_over_many_problems_is_a_verdict():
    n = 100
    a = [[1] * n for _ in range(3)]
    b = [[1] * (n // 2) + [0] * (n // 2) for _ in range(3)]
    d = paired_difference("prefix_rft", "rft", a, b)
    assert d.per_seed == [0.5, 0.5, 0.5] and d.se_seeds == 0.0
    se_p = math.sqrt(0.25 * n / (n - 1) / n)  # per-problem differences: half 1, half 0
    assert d.se_problems == pytest.approx(se_p, rel=1e-12)
    assert d.low == pytest.approx(0.5 - 4.303 * se_p, rel=1e-12) and d.low > 0
    assert d.verdict == "prefix_rft better" and "95% CI [+28.4, +71.6]" in d.line()
    assert paired_difference("rft", "prefix_rft", b, a).verdict == "prefix_rft better"


def test_runs_on_different_problems_are_refused():
    with pytest.raises(AssertionError):
        paired_difference("a", "b", [[1, 0]], [[1, 0, 1]])


def test_t_quantiles_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 4, 5, 9, 10, 15, 20):
        assert t975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3), df
    assert t975(0) == 1.96  # one seed: the problem part alone, normal
