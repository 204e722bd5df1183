"""What an algorithm is, as the trainer needs it: one `AlgorithmSpec`, built from the config by the algorithm's
builder in a registry. The trainer reads only the spec (never the algorithm's name), so an algorithm made of the
pieces below is added here alone:

    @register_algorithm("my_algo")
    def _my_algo(cfg: AlgorithmConfig) -> AlgorithmSpec:
        return AlgorithmSpec("my_algo", cfg.group_size, 0, RolloutPlan.PREFIXED, Baseline.GROUP_MEAN, ...)

The pieces: how a prompt's group is made (`RolloutPlan`), which members form the advantage baseline (`Baseline`),
whether the prefix-entropy mask zeroes advantages, and which per-token loss trains (`LossKind`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from prefix_rft_megatron.algo.config import AlgorithmConfig, ContinuationBaseline


class RolloutPlan(str, Enum):
    """How the G sequences of a prompt's group are made."""

    PREFIXED = "prefixed"  # G-K on-policy samples + K continuations of demonstration prefixes (K = 0: on-policy only)
    FULL_DEMO = "full_demo"  # G-K on-policy samples + K copies of the full demonstration as off-policy members
    DEMONSTRATIONS = "demonstrations"  # the demonstration itself is the prompt's one sequence (nothing sampled)


class Baseline(str, Enum):
    """Which members of a group form the Dr. GRPO baseline (group mean)."""

    ON_POLICY_MEAN = "on_policy_mean"  # the on-policy members only
    GROUP_MEAN = "group_mean"  # every member, demonstrations included
    NONE = "none"  # no advantage at all (the loss does not use one)


class LossKind(str, Enum):
    """The per-token loss (algo/loss.py)."""

    CLIPPED_PG = "clipped_pg"  # PPO clipped surrogate with dual clip on every response token
    SHAPED_OFF_POLICY = "shaped_off_policy"  # clipped PG on sampled tokens, p / (p + gamma) shaping on demo tokens
    CROSS_ENTROPY = "cross_entropy"  # -log p of the demonstration tokens


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    group_size: int
    """G: sequences per prompt."""
    num_demo_members: int
    """K: members of a group that come from the demonstration (prefixed continuations or full copies)."""
    rollout: RolloutPlan
    baseline: Baseline
    raw_continuation_reward: bool
    """A prefixed member's sampled tokens get the raw reward, not reward - baseline (the reference's quirk)."""
    prefix_entropy_mask: bool
    """Only the top-rho entropy prefix tokens keep their advantage (the others get 0)."""
    loss: LossKind

    def __post_init__(self) -> None:
        assert 0 <= self.num_demo_members <= self.group_size, (self.num_demo_members, self.group_size)
        assert self.rollout != RolloutPlan.DEMONSTRATIONS or (self.group_size, self.num_demo_members) == (1, 0)

    @property
    def num_prefixed(self) -> int:
        """Members continuing a demonstration prefix (drawn by the prefix-length schedule)."""
        return self.num_demo_members if self.rollout == RolloutPlan.PREFIXED else 0

    @property
    def samples_per_group(self) -> int:
        """Members the engine generates (full demonstrations are not generated)."""
        if self.rollout == RolloutPlan.DEMONSTRATIONS:
            return 0
        return self.group_size - (self.num_demo_members if self.rollout == RolloutPlan.FULL_DEMO else 0)

    @property
    def has_groups(self) -> bool:
        """Whether rewards form groups whose spread gives the gradient (false for plain SFT)."""
        return self.baseline != Baseline.NONE

    @property
    def loss_sees_demo_tokens(self) -> bool:
        """Whether the loss tells demonstration tokens apart from sampled ones (prefix mask, shaping, metrics)."""
        return self.num_demo_members > 0


_BUILDERS: dict[str, Callable[[AlgorithmConfig], AlgorithmSpec]] = {}


def register_algorithm(name: str):
    """Decorator: `builder(cfg) -> AlgorithmSpec` becomes `algorithm.name=<name>`; it refuses configs it cannot run
    with a ValueError naming the key."""

    def wrap(builder: Callable[[AlgorithmConfig], AlgorithmSpec]):
        _BUILDERS[name.lower()] = builder
        return builder

    return wrap


def algorithm_names() -> list[str]:
    return sorted(_BUILDERS)


def algorithm_spec(cfg: AlgorithmConfig) -> AlgorithmSpec:
    builder = _BUILDERS.get(str(cfg.name).lower())
    if builder is None:
        raise ValueError(f"algorithm.name={cfg.name!r}: not one of {'|'.join(algorithm_names())}")
    return builder(cfg)


@register_algorithm("prefix_rft")
def _prefix_rft(cfg: AlgorithmConfig) -> AlgorithmSpec:
    if not 1 <= cfg.num_prefixed < cfg.group_size:
        raise ValueError("algorithm.name=prefix_rft needs 1 <= algorithm.num_prefixed < algorithm.group_size (at least "
                         f"one prefixed and one on-policy rollout, for the baseline; got num_prefixed="
                         f"{cfg.num_prefixed}, group_size={cfg.group_size})")
    return AlgorithmSpec("prefix_rft", cfg.group_size, cfg.num_prefixed, RolloutPlan.PREFIXED,
                         Baseline.ON_POLICY_MEAN, cfg.continuation_baseline == ContinuationBaseline.NONE,
                         prefix_entropy_mask=True, loss=LossKind.CLIPPED_PG)


@register_algorithm("rft")
def _rft(cfg: AlgorithmConfig) -> AlgorithmSpec:
    if cfg.num_prefixed != 0:
        raise ValueError(f"algorithm.name=rft runs on-policy only: set algorithm.num_prefixed=0 (got {cfg.num_prefixed})")
    return AlgorithmSpec("rft", cfg.group_size, 0, RolloutPlan.PREFIXED, Baseline.ON_POLICY_MEAN, False,
                         prefix_entropy_mask=False, loss=LossKind.CLIPPED_PG)


@register_algorithm("luffy")
def _luffy(cfg: AlgorithmConfig) -> AlgorithmSpec:
    if cfg.num_prefixed < 1:
        raise ValueError("algorithm.name=luffy needs algorithm.num_prefixed >= 1 (the off-policy demonstrations)")
    return AlgorithmSpec("luffy", cfg.group_size, cfg.num_prefixed, RolloutPlan.FULL_DEMO, Baseline.GROUP_MEAN, False,
                         prefix_entropy_mask=False, loss=LossKind.SHAPED_OFF_POLICY)


@register_algorithm("sft")
def _sft(cfg: AlgorithmConfig) -> AlgorithmSpec:
    return AlgorithmSpec("sft", 1, 0, RolloutPlan.DEMONSTRATIONS, Baseline.NONE, False,
                         prefix_entropy_mask=False, loss=LossKind.CROSS_ENTROPY)
