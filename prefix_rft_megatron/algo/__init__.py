"""The algorithm core of Prefix-RFT: prefix schedule, advantages, token statistics, prefix mask, loss.

One module per concern; the trainer calls them in the order of prefix-rft.md (schedule -> advantages -> recompute
log-probs and entropy -> prefix mask -> loss). What differs between algorithms is one `AlgorithmSpec` (spec.py),
which the trainer reads instead of the algorithm's name.
"""

from prefix_rft_megatron.algo.advantages import SequenceAdvantages, group_advantages, token_advantages
from prefix_rft_megatron.algo.config import (
    AlgorithmConfig,
    ContinuationBaseline,
    KLEstimator,
    LossConfig,
    MaskScope,
    MaskSelection,
    PrefixMaskConfig,
    PrefixScheduleConfig,
    ScheduleKind,
)
from prefix_rft_megatron.algo.loss import (
    LossInputs,
    kl_penalty,
    make_loss_func,
    make_recompute_func,
    reduce_metrics,
    token_losses,
)
from prefix_rft_megatron.algo.prefix_mask import (
    apply_prefix_keep,
    batch_threshold,
    keep_masks_for_rows,
    prefix_keep_masks,
)
from prefix_rft_megatron.algo.spec import (
    AlgorithmSpec,
    Baseline,
    LossKind,
    RolloutPlan,
    algorithm_names,
    algorithm_spec,
    register_algorithm,
)
from prefix_rft_megatron.algo.schedule import draw_prefix_fraction, low_bound, prefix_length, sample_prefix_lengths
from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats

__all__ = [
    "AlgorithmSpec", "Baseline", "LossKind", "RolloutPlan", "algorithm_names", "algorithm_spec", "register_algorithm",
    "AlgorithmConfig", "ContinuationBaseline", "KLEstimator", "LossConfig", "MaskScope",
    "MaskSelection", "PrefixMaskConfig", "PrefixScheduleConfig", "ScheduleKind",
    "SequenceAdvantages", "group_advantages", "token_advantages",
    "LossInputs", "kl_penalty", "make_loss_func", "make_recompute_func", "reduce_metrics", "token_losses",
    "apply_prefix_keep", "batch_threshold", "keep_masks_for_rows", "prefix_keep_masks",
    "draw_prefix_fraction", "low_bound", "prefix_length", "sample_prefix_lengths",
    "vocab_parallel_token_stats",
]
