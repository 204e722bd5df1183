"""Data records exchanged with rollout engines: token ids in, token ids + log-probs out.

Log-prob convention (both engines, pinned to SGLang 0.5.23's default sampler, `srt/layers/sampler.py`): the log-prob
of a sampled token is `log_softmax(logits / temperature)` over the full vocabulary, computed before top-p truncation
(the sampling distribution renormalised over the nucleus is *not* what is returned). With temperature 0 (greedy) it is
`log_softmax(logits)`. This is the quantity the trainer recomputes as `logp_old` (log-softmax of logits/temperature).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Iterable, List, Optional, Tuple

FINISH_REASONS = ("stop", "length", "abort")

_MASK64 = (1 << 64) - 1


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (splitmix64 chain): the same parts give the same seed on every rank and host."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & _MASK64)) & _MASK64
        x = (x + 0x9E3779B97F4A7C15) & _MASK64
        z = x
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        x = z ^ (z >> 31)
    return x >> 1


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters of one request. The n samples of a request use seeds `derive_seed(seed, j)`, j < n."""

    n: int = 1  # samples drawn for this request
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0  # nucleus mass; 1.0 disables top-p
    max_new_tokens: int = 128  # sampled tokens per sample, at most
    stop_token_ids: Tuple[int, ...] = ()  # ends a sample (the stop token is kept in the output), besides EOS
    seed: Optional[int] = None  # None: drawn from torch's global generator (reproducible under torch.manual_seed)
    # no token ends a sample, neither EOS nor stop_token_ids: SGLang 0.5.23's meaning (Req._check_token_based_finish
    # returns before it looks at either), which the HF engine follows; for fixed-length benchmark runs
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingParams.n={self.n}: must be >= 1")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature={self.temperature}: must be >= 0")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p={self.top_p}: must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens={self.max_new_tokens}: must be >= 1")
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))

    def sample_seed(self, j: int) -> int:
        assert self.seed is not None
        return derive_seed(self.seed, j)


@dataclass(frozen=True)
class GenerateRequest:
    """Continue `input_ids` (prompt ids, or prompt ids ++ demonstration prefix ids) `params.n` times."""

    input_ids: Tuple[int, ...]
    params: SamplingParams = field(default_factory=SamplingParams)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_ids", tuple(int(t) for t in self.input_ids))
        if not self.input_ids:
            raise ValueError("GenerateRequest.input_ids is empty")


@dataclass
class Completion:
    """One sample of a request: the sampled token ids, their log-probs (convention above) and why it ended."""

    token_ids: List[int]
    logprobs: List[float]
    finish_reason: str  # "stop" (EOS or a stop id, kept as the last token), "length" (max_new_tokens) or "abort"

    def __post_init__(self) -> None:
        assert len(self.token_ids) == len(self.logprobs), (len(self.token_ids), len(self.logprobs))
        assert self.finish_reason in FINISH_REASONS, self.finish_reason


class RolloutKind(str, Enum):
    """Where a group member came from; the advantage baseline and the metrics read this, never the prefix length."""

    ON_POLICY = "on_policy"  # sampled from the prompt alone
    PREFIXED = "prefixed"  # sampled after a demonstration prefix (drawn as one: also when its length L came out 0)
    DEMONSTRATION = "demonstration"  # the demonstration itself, nothing sampled (sft, luffy's off-policy member)


@dataclass
class Rollout:
    """One sequence of a step, from the engine to the loss: the policy's full response is
    `prefix_ids + response_ids`; which tokens were demonstration (off-policy, `prefix_ids`) and which were sampled
    (`response_ids`) is kept, never re-tokenised. The trainer fills in `index`, `reward` and `correct`."""

    prompt_ids: List[int]
    prefix_ids: List[int]  # demonstration tokens: y*[:L] (prefixed), all of y* (demonstration), none (on-policy)
    response_ids: List[int]  # tokens sampled by the engine after prompt ++ prefix
    response_logprobs: List[float]  # engine log-probs of response_ids (none exist for prefix tokens)
    finish_reason: str
    group_id: int  # which prompt group this rollout belongs to (global, layout-independent)
    slot: int  # position in its group, 0..G-1 (on-policy first, then prefixed / demonstrations)
    kind: RolloutKind = RolloutKind.ON_POLICY
    index: int = 0  # position in the step batch (seeds the `random` prefix selection)
    reward: float = 0.0
    correct: bool = False

    def __post_init__(self) -> None:
        assert len(self.response_ids) == len(self.response_logprobs)
        assert self.kind != RolloutKind.ON_POLICY or not self.prefix_ids, "an on-policy rollout has no prefix"
        assert self.kind != RolloutKind.DEMONSTRATION or not self.response_ids, "a demonstration samples nothing"

    @classmethod
    def demonstration(cls, group_id: int, slot: int, prompt_ids, demo_ids) -> "Rollout":
        return cls(list(prompt_ids), list(demo_ids), [], [], "stop", group_id, slot, RolloutKind.DEMONSTRATION)

    @property
    def from_demo(self) -> bool:
        """Made from the demonstration (prefixed or the demonstration itself): not part of an on-policy baseline."""
        return self.kind != RolloutKind.ON_POLICY

    @property
    def prefix_len(self) -> int:
        return len(self.prefix_ids)

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.prefix_ids) + len(self.response_ids)

    @property
    def full_response_ids(self) -> List[int]:
        """What the trainer scores and trains on: demonstration prefix then sampled continuation."""
        return self.prefix_ids + self.response_ids

    @property
    def prefix_mask(self) -> List[bool]:
        """Per token of `full_response_ids`: True for demonstration tokens."""
        return [True] * len(self.prefix_ids) + [False] * len(self.response_ids)


def by_group(rollouts: Iterable[Rollout]) -> List[List[Rollout]]:
    """Rollouts by prompt group, groups in order of first appearance, members in their given order."""
    groups: dict = {}
    for r in rollouts:
        groups.setdefault(r.group_id, []).append(r)
    return list(groups.values())
