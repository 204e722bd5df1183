"""AlgorithmConfig: an OmegaConf structured config with the prefix-rft.md defaults; bad values fail at start-up."""

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from prefix_rft_megatron.algo.config import AlgorithmConfig, MaskScope, ScheduleKind


def test_defaults_are_the_reference_settings():
    c = AlgorithmConfig()
    assert (c.group_size, c.num_prefixed, c.temperature) == (8, 1, 1.0)
    assert (c.schedule.kind, c.schedule.high, c.schedule.low_end, c.schedule.decay_steps) == (
        ScheduleKind.COSINE, 0.95, 0.05, 500)
    assert (c.prefix_mask.rho, c.prefix_mask.scope) == (0.2, MaskScope.BATCH)
    assert (c.loss.clip_eps_low, c.loss.clip_eps_high, c.loss.dual_clip_c) == (0.2, 0.2, 3.0)
    assert (c.loss.entropy_coef, c.loss.kl_coef, c.loss.luffy_gamma) == (0.001, 0.0, 0.1)
    assert c.continuation_baseline.value == "on_policy_mean"


def test_omegaconf_structured_with_dotlist_overrides():
    base = OmegaConf.structured(AlgorithmConfig)
    merged = OmegaConf.merge(base, OmegaConf.from_dotlist(
        ["name=rft", "num_prefixed=0", "prefix_mask.scope=microbatch", "schedule.kind=linear", "loss.kl_coef=0.1"]))
    cfg = OmegaConf.to_object(merged)
    assert isinstance(cfg, AlgorithmConfig)
    assert cfg.prefix_mask.scope is MaskScope.MICROBATCH and cfg.schedule.kind is ScheduleKind.LINEAR
    assert cfg.loss.kl_coef == 0.1
    with pytest.raises(ValidationError, match=r"Invalid value 'everything', expected one of \[BATCH, MICROBATCH\]"):
        OmegaConf.merge(base, OmegaConf.from_dotlist(["prefix_mask.scope=everything"]))  # not an enum member
    with pytest.raises(ValueError, match="rho"):
        OmegaConf.to_object(OmegaConf.merge(base, OmegaConf.from_dotlist(["prefix_mask.rho=0"])))
