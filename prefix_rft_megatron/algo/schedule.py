"""Prefix length schedule (prefix-rft.md section 2).

`l ~ Uniform(low_t, high)` per prefixed rollout per step, `L = clamp(floor(l * |y*|), min_prefix_tokens, |y*| - 1)`.
Every draw is seeded by (seed, step, sample index) through numpy's SeedSequence, never by rank, so any process that
builds a given sample draws the same `L` whatever the parallel layout or the order samples are built in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from prefix_rft_megatron.algo.config import PrefixScheduleConfig, ScheduleKind

# Separates this stream from other draws seeded by the same (seed, step, sample) triple (e.g. the random mask).
_STREAM_PREFIX_FRACTION = 0x5052_4546  # "PREF"


def low_bound(cfg: PrefixScheduleConfig, step: int) -> float:
    """low_t of the schedule at 0-based `step` (the lower end of the uniform draw of `l`)."""
    if step < 0:
        raise ValueError(f"schedule: step must be >= 0 (got {step})")
    progress = min(step, cfg.decay_steps) / cfg.decay_steps
    if cfg.kind == ScheduleKind.COSINE:
        return cfg.low_end + 0.5 * (1.0 + math.cos(math.pi * progress)) * (cfg.high - cfg.low_end)
    if cfg.kind == ScheduleKind.LINEAR:
        return cfg.high - progress * (cfg.high - cfg.low_end)
    if cfg.kind == ScheduleKind.UNIFORM:
        return cfg.low_end
    if cfg.kind == ScheduleKind.CONSTANT:
        return cfg.constant_fraction
    raise AssertionError(f"unknown schedule kind {cfg.kind}")


def sample_rng(seed: int, step: int, sample_index: int, stream: int) -> np.random.Generator:
    """A generator that depends only on (seed, step, sample_index, stream): SeedSequence hashes the tuple."""
    if min(seed, step, sample_index) < 0:
        raise ValueError(f"schedule: seed, step and sample index must be >= 0 (got {seed}, {step}, {sample_index})")
    return np.random.default_rng(np.random.SeedSequence([seed, step, sample_index, stream]))


def draw_prefix_fraction(cfg: PrefixScheduleConfig, seed: int, step: int, sample_index: int) -> float:
    """`l` for one prefixed rollout: U(low_t, high), or the constant fraction for the `constant` schedule.

    `sample_index` must identify the prefixed rollout within the step independently of the layout, e.g.
    `prompt_index_in_step_batch * K + k` or the dataset row id times K plus k.
    """
    if cfg.kind == ScheduleKind.CONSTANT:
        return cfg.constant_fraction
    low = low_bound(cfg, step)
    u = sample_rng(seed, step, sample_index, _STREAM_PREFIX_FRACTION).random()
    return low + (cfg.high - low) * u


def prefix_length(fraction: float, demo_len: int, min_prefix_tokens: int) -> int:
    """`L = clamp(floor(l * |y*|), min_prefix_tokens, |y*| - 1)`: always leaves at least one demonstration token."""
    if demo_len < 1:
        raise ValueError(f"schedule: a demonstration must have at least one token (got length {demo_len})")
    length = math.floor(fraction * demo_len)
    return min(max(length, min_prefix_tokens), demo_len - 1)


def sample_prefix_lengths(
    cfg: PrefixScheduleConfig, seed: int, step: int, sample_indices: Sequence[int], demo_lens: Sequence[int]
) -> list[int]:
    """`L` for each prefixed rollout of a step, given its layout-independent index and its demonstration length."""
    if len(sample_indices) != len(demo_lens):
        raise ValueError(f"schedule: {len(sample_indices)} sample indices for {len(demo_lens)} demonstrations")
    return [
        prefix_length(draw_prefix_fraction(cfg, seed, step, i), n, cfg.min_prefix_tokens)
        for i, n in zip(sample_indices, demo_lens)
    ]
