"""Dr. GRPO advantages with the prefix-aware baseline, against a loop over groups."""

import pytest
import torch

from prefix_rft_megatron.algo.advantages import group_advantages, token_advantages
from prefix_rft_megatron.algo.config import AlgorithmConfig
from prefix_rft_megatron.algo.spec import Baseline, algorithm_spec


def _reference(rewards, groups, demo, algo, quirk):
    prefix, gen = [], []
    for r, g, d in zip(rewards, groups, demo):
        members = [i for i, gg in enumerate(groups) if gg == g]
        base_members = members if algo == "luffy" else [i for i in members if not demo[i]]
        base = sum(rewards[i] for i in base_members) / len(base_members)
        prefix.append(r - base)
        gen.append(r if (quirk and d) else r - base)
    return prefix, gen


@pytest.mark.parametrize("algo,quirk", [("prefix_rft", False), ("prefix_rft", True), ("luffy", False)])
def test_matches_loop_reference(algo, quirk):
    g = torch.Generator().manual_seed(0)
    G, K, B = 8, 2, 6
    rewards = torch.randint(0, 2, (B * G,), generator=g).float()
    groups = torch.arange(B).repeat_interleave(G)
    perm = torch.randperm(B * G, generator=g)  # groups need not be contiguous
    demo = (torch.arange(G) >= G - K).repeat(B)
    rewards, groups, demo = rewards[perm], groups[perm], demo[perm]
    spec = algorithm_spec(AlgorithmConfig(name=algo, group_size=G, num_prefixed=K,
                                          continuation_baseline="none" if quirk else "on_policy_mean"))
    out = group_advantages(rewards, groups, demo, spec.baseline, spec.raw_continuation_reward)
    ref_p, ref_g = _reference(rewards.tolist(), groups.tolist(), demo.tolist(), algo, quirk)
    # Rewards are 0/1 and groups of 8: float64 means then a float32 cast; 1e-6 covers the cast.
    torch.testing.assert_close(out.prefix, torch.tensor(ref_p), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.generated, torch.tensor(ref_g), atol=1e-6, rtol=0)


def test_all_zero_on_policy_group_learns_from_prefix():
    rewards = torch.tensor([0.0] * 7 + [1.0])
    demo = torch.tensor([False] * 7 + [True])
    out = group_advantages(rewards, torch.zeros(8), demo)
    assert out.prefix.tolist() == [0.0] * 7 + [1.0]
    assert out.generated.tolist() == [0.0] * 7 + [1.0]


def test_rft_plain_dr_grpo_no_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    spec = algorithm_spec(AlgorithmConfig(name="rft", num_prefixed=0))
    out = group_advantages(rewards, torch.tensor([0, 0, 0, 0, 1, 1]), torch.zeros(6, dtype=torch.bool), spec.baseline)
    # Group 0 mean 0.25 (no std division: 0.75, -0.25 exactly); group 1 all equal -> 0.
    assert out.prefix.tolist() == [0.75, -0.25, -0.25, -0.25, 0.0, 0.0]


def test_sft_has_no_advantage():
    out = group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), torch.ones(2, dtype=torch.bool),
                           Baseline.NONE)
    assert out.prefix.tolist() == out.generated.tolist() == [0.0, 0.0]


def test_group_without_on_policy_rollout_is_an_error():
    with pytest.raises(ValueError, match="no on-policy"):
        group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), torch.tensor([False, True]))


def test_token_broadcast():
    seq = group_advantages(torch.tensor([0.0, 1.0]), torch.zeros(2), torch.tensor([False, True]),
                           raw_continuation_reward=True)
    response = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1]], dtype=torch.bool)
    prefix = torch.tensor([[0, 0, 0, 0, 0], [0, 1, 1, 0, 0]], dtype=torch.bool)
    adv = token_advantages(seq, response, prefix)
    # prefixed rollout: prefix tokens r - mean_on = 1, continuation raw r = 1 (quirk); on-policy row: 0 - 0 = 0
    assert adv.tolist() == [[0, 0, 0, 0, 0], [0, 1, 1, 1, 1]]
    with pytest.raises(ValueError):
        token_advantages(seq, response, ~response)


def test_config_validation():
    with pytest.raises(ValueError, match="num_prefixed=0"):
        AlgorithmConfig(name="rft", num_prefixed=1)
    with pytest.raises(ValueError, match="one on-policy"):
        AlgorithmConfig(name="prefix_rft", group_size=2, num_prefixed=2)
    with pytest.raises(ValueError, match=r"algorithm.name='ppo': not one of luffy\|prefix_rft\|rft\|sft"):
        AlgorithmConfig(name="ppo")
    assert AlgorithmConfig(name="RFT", num_prefixed=0).name == "rft"  # YAML files written for the old enum
