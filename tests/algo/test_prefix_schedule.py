"""Prefix length schedule: the formula of prefix-rft.md section 2, the clamp, and rank-free seeding."""

import math

import pytest

from prefix_rft_megatron.algo.config import PrefixScheduleConfig, ScheduleKind
from prefix_rft_megatron.algo.schedule import (
    draw_prefix_fraction,
    low_bound,
    prefix_length,
    sample_prefix_lengths,
)


def test_cosine_start_middle_end_match_formula():
    cfg = PrefixScheduleConfig(kind=ScheduleKind.COSINE, high=0.95, low_end=0.05, decay_steps=500)
    # Closed-form values of low_t = low_end + 0.5 (1 + cos(pi t / T)) (high - low_end): exact up to float64 round-off.
    assert low_bound(cfg, 0) == pytest.approx(0.95, abs=1e-12)
    assert low_bound(cfg, 250) == pytest.approx(0.5, abs=1e-12)  # cos(pi/2) = 0 -> midpoint
    assert low_bound(cfg, 125) == pytest.approx(0.05 + 0.5 * (1 + math.sqrt(0.5)) * 0.9, abs=1e-12)
    assert low_bound(cfg, 500) == pytest.approx(0.05, abs=1e-12)
    assert low_bound(cfg, 10_000) == pytest.approx(0.05, abs=1e-12)  # stays after T_decay


def test_other_schedules():
    lin = PrefixScheduleConfig(kind=ScheduleKind.LINEAR, high=0.9, low_end=0.1, decay_steps=100)
    assert [low_bound(lin, t) for t in (0, 50, 100, 400)] == pytest.approx([0.9, 0.5, 0.1, 0.1], abs=1e-12)
    uni = PrefixScheduleConfig(kind=ScheduleKind.UNIFORM, high=0.9, low_end=0.1)
    assert low_bound(uni, 0) == low_bound(uni, 77) == pytest.approx(0.1)
    const = PrefixScheduleConfig(kind=ScheduleKind.CONSTANT, constant_fraction=0.3)
    assert {draw_prefix_fraction(const, 1, t, i) for t in range(3) for i in range(5)} == {0.3}


def test_draws_lie_in_bounds_and_cover_them():
    cfg = PrefixScheduleConfig(decay_steps=10)
    for step in (0, 3, 5, 10, 20):
        low = low_bound(cfg, step)
        draws = [draw_prefix_fraction(cfg, 7, step, i) for i in range(2000)]
        assert all(low <= d <= cfg.high for d in draws)
        if cfg.high - low > 0.1:
            # Uniform on [low, high]: the sample mean of 2000 draws is within ~5 standard errors of the midpoint.
            se = (cfg.high - low) / math.sqrt(12 * 2000)
            assert abs(sum(draws) / len(draws) - (low + cfg.high) / 2) < 5 * se


def test_draws_seeded_by_triple_not_order():
    cfg = PrefixScheduleConfig()
    forward = [draw_prefix_fraction(cfg, 3, 40, i) for i in range(50)]
    backward = [draw_prefix_fraction(cfg, 3, 40, i) for i in reversed(range(50))][::-1]
    assert forward == backward  # what a rank draws does not depend on which other samples it drew before
    assert len(set(forward)) == 50
    assert draw_prefix_fraction(cfg, 3, 41, 0) != forward[0]
    assert draw_prefix_fraction(cfg, 4, 40, 0) != forward[0]


def test_length_clamp_never_reaches_demo_length():
    # floor(l * n), clamped to [min_prefix_tokens, n - 1], checked against a direct reading of the rule.
    for n in range(1, 40):
        for frac in (0.0, 0.01, 0.5, 0.95, 0.999, 1.0):
            for min_tok in (0, 1, 4):
                got = prefix_length(frac, n, min_tok)
                assert got == min(max(int(frac * n), min_tok), n - 1)
                assert 0 <= got < n
    cfg = PrefixScheduleConfig(decay_steps=5, min_prefix_tokens=3)
    lens = [1, 2, 3, 4, 10, 100] * 50
    out = sample_prefix_lengths(cfg, 0, 0, list(range(len(lens))), lens)
    assert all(length < n for length, n in zip(out, lens))
    assert all(length >= min(3, n - 1) for length, n in zip(out, lens))
    with pytest.raises(ValueError):
        prefix_length(0.5, 0, 1)


def test_bad_config_fails_at_start():
    with pytest.raises(ValueError, match="low_end"):
        PrefixScheduleConfig(high=0.3, low_end=0.5)
    with pytest.raises(ValueError, match="decay_steps"):
        PrefixScheduleConfig(decay_steps=0)
