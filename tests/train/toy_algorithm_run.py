"""`prefix-rft train` with one more algorithm, added the way docs/architecture.md says: a builder registered in algo's
registry, composed of the existing pieces (nothing in train/ or rollout/ changes). Used by test_algorithm_spec.py."""

import sys

from prefix_rft_megatron.algo import AlgorithmSpec, Baseline, LossKind, RolloutPlan, register_algorithm


@register_algorithm("toy_all_prefix")
def _toy_all_prefix(cfg) -> AlgorithmSpec:
    """Prefix-RFT's rollouts with LUFFY's baseline (every member) and no entropy mask."""
    return AlgorithmSpec("toy_all_prefix", cfg.group_size, cfg.num_prefixed, RolloutPlan.PREFIXED, Baseline.GROUP_MEAN,
                         raw_continuation_reward=False, prefix_entropy_mask=False, loss=LossKind.CLIPPED_PG)


if __name__ == "__main__":
    from prefix_rft_megatron.train.cli import main

    sys.exit(main(sys.argv[1:]))
