"""The step's rollout metrics (train/step_metrics.py) on a hand-made step: group fractions counted by hand."""

import pytest

from prefix_rft_megatron.algo.spec import algorithm_spec
from prefix_rft_megatron.config.schema import AlgorithmConfig
from prefix_rft_megatron.rollout import Rollout, RolloutKind, by_group
from prefix_rft_megatron.train.step_metrics import rollout_metrics


def _r(group, slot, reward, kind=RolloutKind.ON_POLICY, n=2):
    prefix = [7, 7, 7] if kind != RolloutKind.ON_POLICY else []
    return Rollout([1], prefix, [5] * n, [-0.5] * n, "stop", group, slot, kind, reward=reward, correct=reward > 0)


def test_group_fractions_by_hand():
    # group 0: all wrong on-policy, the prefixed member right (signal); group 1: all right (no signal);
    # group 2: all wrong (no signal, all wrong). Members interleaved across groups, as a refilled step may be.
    step = [_r(0, 0, 0.0), _r(1, 0, 1.0), _r(2, 0, 0.0), _r(0, 1, 1.0, RolloutKind.PREFIXED),
            _r(1, 1, 1.0), _r(2, 1, 0.0)]
    assert [[(r.group_id, r.slot) for r in g] for g in by_group(step)] == [[(0, 0), (0, 1)], [(1, 0), (1, 1)],
                                                                         [(2, 0), (2, 1)]]
    m = rollout_metrics(step, algorithm_spec(AlgorithmConfig(name="PREFIX_RFT", group_size=2, num_prefixed=1)),
                        low_t=0.5)
    assert m["groups/no_signal_frac"] == pytest.approx(2 / 3)
    assert m["groups/on_policy_all_wrong_frac"] == pytest.approx(2 / 3)  # groups 0 and 2
    assert m["reward/prefixed"] == 1.0 and m["reward/on_policy"] == pytest.approx(2 / 5)
    assert m["prefix/tokens_mean"] == 3.0 and m["response/on_policy_length_mean"] == 2.0
