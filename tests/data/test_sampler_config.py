"""Prompt sampler: deterministic from (seed, epoch), a permutation per epoch, exact resume. Configs with OmegaConf."""

import pytest
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from prefix_rft_megatron.data import DataConfig, PromptSampler
from prefix_rft_megatron.reward import RewardConfig


def take(sampler, steps):
    return [sampler.next_batch() for _ in range(steps)]


def test_deterministic_and_seed_dependent():
    assert take(PromptSampler(50, 8, seed=3), 20) == take(PromptSampler(50, 8, seed=3), 20)
    assert take(PromptSampler(50, 8, seed=3), 20) != take(PromptSampler(50, 8, seed=4), 20)
    s = PromptSampler(50, 8, seed=3)
    assert s.permutation(1) != s.permutation(0) and s.permutation(0) == PromptSampler(50, 1, seed=3).permutation(0)


def test_each_epoch_is_a_permutation_and_batches_straddle():
    n, b = 50, 8
    s = PromptSampler(n, b, seed=0)
    stream = [i for batch in take(s, 25) for i in batch]  # 200 prompts = 4 epochs
    for e in range(4):
        assert sorted(stream[e * n:(e + 1) * n]) == list(range(n))
        assert stream[e * n:(e + 1) * n] == s.permutation(e)
    assert s.position == 200 and s.epoch == 4
    assert take(PromptSampler(n, b, shuffle=False), 7)[6] == [48, 49, 0, 1, 2, 3, 4, 5]


def test_resume_continues_exactly():
    straight = PromptSampler(37, 5, seed=11)
    expected = take(straight, 30)
    first = PromptSampler(37, 5, seed=11)
    head = take(first, 13)
    state = first.state_dict()
    resumed = PromptSampler(37, 5, seed=11)
    resumed.load_state_dict(state)
    assert head + take(resumed, 17) == expected
    # a different batch size continues the same stream of prompts
    other = PromptSampler(37, 10, seed=11)
    other.load_state_dict(state)
    assert [i for bt in take(other, 3) for i in bt] == [i for bt in expected[13:19] for i in bt]
    with pytest.raises(ValueError, match="seed=11"):
        PromptSampler(37, 5, seed=12).load_state_dict(state)
    with pytest.raises(ValueError, match="num_examples=37"):
        PromptSampler(38, 5, seed=11).load_state_dict(state)


def test_configs_are_structured_configs():
    data = OmegaConf.merge(OmegaConf.structured(DataConfig),
                           OmegaConf.from_dotlist(["strict=true", "max_demo_tokens=64", "train_files=[a.parquet]"]))
    obj = OmegaConf.to_object(data)
    assert isinstance(obj, DataConfig) and obj.strict and obj.max_demo_tokens == 64 and obj.train_files == ["a.parquet"]
    with pytest.raises(ValidationError, match="max_demo_tokens"):
        OmegaConf.merge(OmegaConf.structured(DataConfig), OmegaConf.from_dotlist(["max_demo_tokens=lots"]))
    with pytest.raises(ValueError, match="prompt_template must contain"):
        OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig),
                                            OmegaConf.from_dotlist(["prompt_template=no placeholder"])))
    reward = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(RewardConfig),
                                                 OmegaConf.from_dotlist(["timeout_s=2.5", "format_score=0.1"])))
    assert isinstance(reward, RewardConfig) and reward.timeout_s == 2.5 and reward.format_score == 0.1
