"""The algorithm's knobs: one typed dataclass (an OmegaConf structured config), defaults from prefix-rft.md.

Nested dataclasses group the knobs by the section of prefix-rft.md they belong to. Enums are `str` enums so YAML
files and dotlist overrides can write the plain names (`algo.prefix_mask.scope=microbatch`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class ScheduleKind(str, Enum):
    """How the lower bound of the prefix fraction `l` moves with the step (prefix-rft.md section 2)."""

    COSINE = "cosine"  # low_t decays by a cosine from `high` to `low_end` over `decay_steps` (reference)
    LINEAR = "linear"  # low_t decays linearly from `high` to `low_end` over `decay_steps`
    UNIFORM = "uniform"  # no decay: l ~ U(low_end, high) at every step
    CONSTANT = "constant"  # no draw: l = `constant_fraction` for every prefixed rollout


class ContinuationBaseline(str, Enum):
    """Baseline for the tokens a prefixed rollout's policy continuation produced (prefix-rft.md section 3)."""

    ON_POLICY_MEAN = "on_policy_mean"  # A = r_k - mean(on-policy rewards of the group) (this project's default)
    NONE = "none"  # A = r_k raw on the continuation (the reference code's quirk, for reproduction)


class MaskScope(str, Enum):
    """Over which tokens the prefix-entropy threshold is taken (prefix-rft.md section 4)."""

    BATCH = "batch"  # the whole step batch, all data-parallel ranks: layout independent (default)
    MICROBATCH = "microbatch"  # each micro-batch on its own rank (the reference's behaviour)


class MaskSelection(str, Enum):
    """Which prefix tokens keep their advantage (top entropy is the method; the others are ablations)."""

    TOP = "top"  # the highest-entropy rho fraction
    BOTTOM = "bottom"  # the lowest-entropy rho fraction
    RANDOM = "random"  # a random rho fraction, drawn per token from (seed, step, sample, position)


class KLEstimator(str, Enum):
    """Per-token estimator of KL(pi_theta || pi_ref) (Schulman's k1 / k3)."""

    K1 = "k1"  # logp - logp_ref
    K3 = "k3"  # exp(logp_ref - logp) - (logp_ref - logp) - 1  (non-negative, unbiased)


@dataclass
class PrefixScheduleConfig:
    """Prefix length `L = clamp(floor(l * |y*|), min_prefix_tokens, |y*| - 1)`, `l ~ U(low_t, high)`."""

    kind: ScheduleKind = ScheduleKind.COSINE
    """Shape of the decay of low_t (cosine is the reference)."""
    high: float = 0.95
    """Upper bound of l, and the value low_t starts from."""
    low_end: float = 0.05
    """Value low_t reaches at `decay_steps` and keeps afterwards (and the fixed low of `uniform`)."""
    decay_steps: int = 500
    """T_decay: steps over which low_t goes from `high` to `low_end` (reference: 500)."""
    constant_fraction: float = 0.5
    """l used by the `constant` schedule (ablation only)."""
    min_prefix_tokens: int = 1
    """Floor on L in demonstration tokens (the cap |y*| - 1 wins when a demonstration is shorter)."""

    def __post_init__(self) -> None:
        self.kind = ScheduleKind(self.kind)
        if not 0.0 <= self.low_end <= self.high <= 1.0:
            raise ValueError(f"algorithm.schedule: need 0 <= low_end <= high <= 1 (got {self.low_end}, {self.high})")
        if self.decay_steps < 1:
            raise ValueError(f"algorithm.schedule.decay_steps must be >= 1 (got {self.decay_steps})")
        if not 0.0 <= self.constant_fraction <= 1.0:
            raise ValueError(f"algorithm.schedule.constant_fraction must be in [0, 1] (got {self.constant_fraction})")
        if self.min_prefix_tokens < 0:
            raise ValueError(f"algorithm.schedule.min_prefix_tokens must be >= 0 (got {self.min_prefix_tokens})")


@dataclass
class PrefixMaskConfig:
    """Entropy-based selection of the prefix (demonstration) tokens that keep their advantage."""

    rho: float = 0.2
    """Fraction of prefix tokens kept (paper: top 20%). 1.0 keeps every prefix token."""
    scope: MaskScope = MaskScope.BATCH
    """`batch`: one threshold over the step batch on all DP ranks; `microbatch`: the reference's per-micro-batch."""
    selection: MaskSelection = MaskSelection.TOP
    """`top` is the method; `bottom` and `random` are the paper's ablations."""

    def __post_init__(self) -> None:
        self.scope, self.selection = MaskScope(self.scope), MaskSelection(self.selection)
        if not 0.0 < self.rho <= 1.0:
            raise ValueError(f"algorithm.prefix_mask.rho must be in (0, 1] (got {self.rho})")


@dataclass
class LossConfig:
    """PPO clipped surrogate, dual clip, optional entropy bonus and KL; Dr. GRPO aggregation."""

    clip_eps_low: float = 0.2
    """ratio is clipped below at 1 - clip_eps_low."""
    clip_eps_high: float = 0.2
    """ratio is clipped above at 1 + clip_eps_high."""
    dual_clip_c: float = 3.0
    """Dual clip for negative advantages: l_t = min(l_t, -c * A_t). Must be > 1; 0 turns it off."""
    entropy_coef: float = 0.001
    """beta_H of the entropy bonus `- beta_H * H_t` (reference default 0.001); 0 turns it off."""
    entropy_exclude_prefix: bool = False
    """Leave prefix (demonstration / off-policy) tokens out of the entropy bonus."""
    kl_coef: float = 0.0
    """Weight of the KL penalty to a reference model; 0 (default) turns it off and no reference is needed."""
    kl_estimator: KLEstimator = KLEstimator.K3
    """Per-token KL estimator used when kl_coef > 0."""
    max_response_tokens: int = 0
    """L_max of the Dr. GRPO aggregation: a constant divisor, the maximum response length. 0 (default): derived,
    rollout.max_new_tokens; an explicit value must be >= it."""
    luffy_gamma: float = 0.1
    """gamma of LUFFY's policy shaping f(p) = p / (p + gamma) on off-policy tokens."""

    def __post_init__(self) -> None:
        self.kl_estimator = KLEstimator(self.kl_estimator)
        if self.clip_eps_low < 0 or self.clip_eps_high < 0 or self.clip_eps_low >= 1:
            raise ValueError(
                f"algorithm.loss: need 0 <= clip_eps_low < 1 and clip_eps_high >= 0 "
                f"(got {self.clip_eps_low}, {self.clip_eps_high})"
            )
        if self.dual_clip_c != 0 and self.dual_clip_c <= 1:
            raise ValueError(f"algorithm.loss.dual_clip_c must be > 1, or 0 to disable (got {self.dual_clip_c})")
        if self.max_response_tokens < 0:
            raise ValueError(f"algorithm.loss.max_response_tokens must be >= 0 (0: rollout.max_new_tokens; got "
                             f"{self.max_response_tokens})")
        if self.luffy_gamma <= 0:
            raise ValueError(f"algorithm.loss.luffy_gamma must be > 0 (got {self.luffy_gamma})")
        if self.entropy_coef < 0 or self.kl_coef < 0:
            raise ValueError(f"algorithm.loss: entropy_coef and kl_coef must be >= 0 ({self.entropy_coef}, {self.kl_coef})")


@dataclass
class AlgorithmConfig:
    """Everything prefix-rft.md sections 2-6 leave as a choice, with the reference's values as defaults."""

    name: str = "prefix_rft"
    """Which algorithm runs (algo/spec.py's registry): prefix_rft | rft (Dr. GRPO, on-policy only) | luffy
    (demonstration as a full off-policy member) | sft (cross-entropy on the demonstrations)."""
    group_size: int = 8
    """G: rollouts per prompt, prefixed (or off-policy) ones included."""
    num_prefixed: int = 1
    """K: how many of the G rollouts start from a demonstration prefix (luffy: full off-policy demonstrations)."""
    seed: int = 1234
    """Seeds the prefix-length draws and the `random` mask selection, together with (step, sample index)."""
    temperature: float = 1.0
    """The one temperature of training: rollouts are sampled at it, and the trainer's log-probs and entropies are
    computed from logits / temperature (evaluation has its own, eval.temperature)."""
    dynamic_sampling: bool = False
    """DAPO's dynamic sampling: groups whose rewards are all equal (no gradient under a group baseline) are dropped
    and the step refilled from more prompts, up to `dynamic_sampling_max_draws` prompt batches per step; a step
    still short after them trains on the best it has, zero-signal groups included (metrics count both)."""
    dynamic_sampling_max_draws: int = 4
    """Prompt batches (of train.prompts_per_step) a step may draw with dynamic sampling, the first included."""
    continuation_baseline: ContinuationBaseline = ContinuationBaseline.ON_POLICY_MEAN
    """Baseline of a prefixed rollout's continuation tokens (`none` reproduces the reference quirk)."""
    schedule: PrefixScheduleConfig = field(default_factory=PrefixScheduleConfig)
    prefix_mask: PrefixMaskConfig = field(default_factory=PrefixMaskConfig)
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        # OmegaConf hands enums back as enums, plain construction may pass strings: accept both.
        from prefix_rft_megatron.algo.spec import algorithm_spec  # the registry imports this module

        self.name = str(self.name).lower()
        self.continuation_baseline = ContinuationBaseline(self.continuation_baseline)
        if self.group_size < 1:
            raise ValueError(f"algorithm.group_size must be >= 1 (got {self.group_size})")
        if not 0 <= self.num_prefixed <= self.group_size:
            raise ValueError(
                f"algorithm.num_prefixed must be in [0, group_size={self.group_size}] (got {self.num_prefixed})"
            )
        if self.temperature <= 0:
            raise ValueError(f"algorithm.temperature must be > 0 (got {self.temperature})")
        if self.dynamic_sampling_max_draws < 1:
            raise ValueError(f"algorithm.dynamic_sampling_max_draws must be >= 1 (got {self.dynamic_sampling_max_draws})")
        spec = algorithm_spec(self)  # the algorithm's own checks (name, group shape)
        if self.dynamic_sampling and not spec.has_groups:
            raise ValueError(f"algorithm.dynamic_sampling filters reward groups; algorithm.name={self.name} has none")
