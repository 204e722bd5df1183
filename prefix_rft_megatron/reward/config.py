"""Reward configuration (OmegaConf structured config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RewardConfig:
    """How rollouts are scored against the ground-truth answer (math-verify in a process pool)."""

    num_workers: int = 2
    """Worker processes that run math-verify. 0 scores in the calling process with no time limit (tests, debugging)."""

    timeout_s: float = 5.0
    """Wall-clock limit per answer. A worker that exceeds it is killed and replaced; the answer scores 0, logged."""

    format_score: float = 0.0
    """Added to the reward when the response has a non-empty final `\\boxed{}`. 0: the paper's binary reward."""

    boxed_only: bool = False
    """If True, a response without `\\boxed{}` scores 0; if False, math-verify searches the response's tail instead."""

    fallback_tail_chars: int = 2000
    """Characters from the end of the response searched when there is no `\\boxed{}` (bounds the cost of huge ones)."""

    max_answer_chars: int = 1000
    """A boxed answer longer than this is not verified (scores 0): nobody's final answer is that long."""

    max_tasks_per_worker: int = 10000
    """Replace a worker after this many answers, bounding memory held by sympy caches. 0 never replaces."""

    start_method: str = "forkserver"
    """multiprocessing start method of the workers: `forkserver` (safe next to torch threads), `spawn` or `fork`."""

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"reward.num_workers must be >= 0, got {self.num_workers}")
        if not self.timeout_s > 0:
            raise ValueError(f"reward.timeout_s must be > 0, got {self.timeout_s}")
        if self.fallback_tail_chars < 0 or self.max_answer_chars <= 0 or self.max_tasks_per_worker < 0:
            raise ValueError("reward: fallback_tail_chars >= 0, max_answer_chars > 0, max_tasks_per_worker >= 0")
        if self.start_method not in ("forkserver", "spawn", "fork"):
            raise ValueError(f"reward.start_method must be forkserver, spawn or fork, got {self.start_method!r}")
