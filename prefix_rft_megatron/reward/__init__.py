"""Verifiable reward: math-verify on the final `\\boxed{}` answer, in a process pool with a per-answer time limit."""

from prefix_rft_megatron.reward.answer import last_boxed
from prefix_rft_megatron.reward.config import RewardConfig
from prefix_rft_megatron.reward.pool import RewardResult, RewardScorer, score_one

__all__ = ["RewardConfig", "RewardResult", "RewardScorer", "last_boxed", "score_one"]
