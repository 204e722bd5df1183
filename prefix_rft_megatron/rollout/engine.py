"""The rollout engine interface, and the helper that turns prompt groups into on-policy + prefixed requests.

Two implementations: `hf_engine.HFEngine` (a transformers model in this process; CPU tests, the demo) and
`sglang.SGLangEngine` (SGLang HTTP servers; the GPU path). Both take token ids and return token ids with
per-token log-probs (see `types` for the log-prob convention), and both take weights as HF-layout named tensors in
buckets, so the trainer's weight sync does not know which one it feeds.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, replace
from typing import Iterable, List, Optional, Sequence, Tuple

import torch

from .types import Completion, GenerateRequest, Rollout, RolloutKind, SamplingParams, derive_seed

# One bucket of a weight update: (HF parameter name, full unsharded tensor) pairs, e.g.
# [("model.layers.0.self_attn.q_proj.weight", t), ...].
WeightBucket = Sequence[Tuple[str, torch.Tensor]]

MEMORY_PARTS = ("weights", "kv_cache")  # what `resume_memory` takes back, in the order a colocated step does


class RolloutEngine(abc.ABC):
    """What the trainer calls. Every method blocks until the engine has done it."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[GenerateRequest]) -> List[List[Completion]]:
        """For each request, `request.params.n` completions of `request.input_ids`, in request order.

        A request with a seed gives the same completions whatever else is in the batch (exactly for the HF engine;
        for SGLang only with --enable-deterministic-inference)."""

    @abc.abstractmethod
    def update_weights(self, buckets: Iterable[WeightBucket], version: Optional[int] = None) -> None:
        """Load new weights given by HF name; names the model does not have are an error. Generation is paused
        around the update and caches computed with the old weights are dropped. `version` is a label (the step)."""

    @abc.abstractmethod
    def release_memory(self) -> None:
        """Free the engine's accelerator memory (weights and KV cache) while the trainer runs; weights must be
        updated (or memory resumed) before the next generate."""

    @abc.abstractmethod
    def resume_memory(self, part: Optional[str] = None) -> None:
        """Take back the memory released by `release_memory`: one of MEMORY_PARTS ("weights" before a weight
        update, "kv_cache" after it, so the two and the sync's transient are never resident together), or all."""

    @abc.abstractmethod
    def health(self) -> bool:
        """True when the engine can generate now."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Stop what the engine started (server processes, threads); idempotent."""


@dataclass(frozen=True)
class GroupSpec:
    """One prompt's rollout group: G = num_samples rollouts, of which len(prefix_lens) are prefixed.

    prefix_lens are demonstration token counts L, already drawn by the prefix-length schedule (0 <= L <= |demo|)."""

    group_id: int
    prompt_ids: Tuple[int, ...]
    demo_ids: Tuple[int, ...]
    num_samples: int
    prefix_lens: Tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompt_ids", tuple(self.prompt_ids))
        object.__setattr__(self, "demo_ids", tuple(self.demo_ids))
        object.__setattr__(self, "prefix_lens", tuple(int(x) for x in self.prefix_lens))
        if len(self.prefix_lens) > self.num_samples:
            raise ValueError(
                f"group {self.group_id}: {len(self.prefix_lens)} prefixed rollouts > group size {self.num_samples}"
            )
        for L in self.prefix_lens:
            if not 0 <= L <= len(self.demo_ids):
                raise ValueError(f"group {self.group_id}: prefix length {L} outside [0, {len(self.demo_ids)}]")


def build_group_requests(
    groups: Sequence[GroupSpec],
    params: SamplingParams,
    step: int = 0,
    prefix_counts_toward_budget: bool = True,
) -> Tuple[List[GenerateRequest], List[Tuple[int, int, int]]]:
    """Requests for the groups, and for each request (group index, first sample index, prefix length).

    Per group: one on-policy request with n = G - K on prompt ids, then K requests with n = 1 on
    prompt ids ++ demo ids[:L]. Seeds derive from (params.seed, step, group_id, slot), so they do not depend on the
    rank, the batch composition or the engine. `params.n` is ignored (the group sizes decide n)."""
    base_seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
    requests: List[GenerateRequest] = []
    layout: List[Tuple[int, int, int]] = []
    for gi, g in enumerate(groups):
        n_on = g.num_samples - len(g.prefix_lens)
        if n_on > 0:
            p = replace(params, n=n_on, seed=derive_seed(base_seed, step, g.group_id, 0))
            requests.append(GenerateRequest(g.prompt_ids, p))
            layout.append((gi, 0, 0))
        for k, L in enumerate(g.prefix_lens):
            max_new = params.max_new_tokens
            if prefix_counts_toward_budget:
                max_new = max(1, max_new - L)
            p = replace(params, n=1, max_new_tokens=max_new, seed=derive_seed(base_seed, step, g.group_id, 1 + k))
            requests.append(GenerateRequest(g.prompt_ids + g.demo_ids[:L], p))
            layout.append((gi, n_on + k, L))
    return requests, layout


def generate_groups(
    engine: RolloutEngine,
    groups: Sequence[GroupSpec],
    params: SamplingParams,
    step: int = 0,
    prefix_counts_toward_budget: bool = True,
) -> List[List[Rollout]]:
    """Generate every group of a step in one engine call; returns the rollouts of each group in sample order
    (on-policy samples first, then the prefixed ones in prefix_lens order)."""
    requests, layout = build_group_requests(groups, params, step, prefix_counts_toward_budget)
    completions = engine.generate(requests) if requests else []
    out: List[List[Rollout]] = [[] for _ in groups]
    for (gi, first, L), comps in zip(layout, completions):
        g = groups[gi]
        prefixed = first >= g.num_samples - len(g.prefix_lens)
        for j, c in enumerate(comps):
            out[gi].append(
                Rollout(
                    prompt_ids=list(g.prompt_ids),
                    prefix_ids=list(g.demo_ids[:L]),
                    response_ids=list(c.token_ids),
                    response_logprobs=list(c.logprobs),
                    finish_reason=c.finish_reason,
                    group_id=g.group_id,
                    slot=first + j,
                    kind=RolloutKind.PREFIXED if prefixed else RolloutKind.ON_POLICY,
                )
            )
    for gi, g in enumerate(groups):
        assert len(out[gi]) == g.num_samples, (gi, len(out[gi]), g.num_samples)
    return out


def generate_group(
    engine: RolloutEngine,
    prompt_ids: Sequence[int],
    demo_ids: Sequence[int],
    prefix_lens: Sequence[int],
    num_samples: int,
    params: SamplingParams,
    group_id: int = 0,
    step: int = 0,
    prefix_counts_toward_budget: bool = True,
) -> List[Rollout]:
    """One group: num_samples - len(prefix_lens) on-policy rollouts, then one prefixed rollout per L."""
    spec = GroupSpec(group_id, tuple(prompt_ids), tuple(demo_ids), num_samples, tuple(prefix_lens))
    return generate_groups(engine, [spec], params, step, prefix_counts_toward_budget)[0]


def build_engine(cfg, hf_config=None) -> RolloutEngine:
    """The engine `cfg.engine` names. `hf_config` (dict, directory or transformers config) is needed for "hf"."""
    if cfg.engine == "hf":
        from .hf_engine import HFEngine

        if hf_config is None:
            raise ValueError("rollout.engine=hf needs the model's HF config (dict or directory)")
        return HFEngine.from_rollout_config(hf_config, cfg)
    if cfg.engine == "sglang":
        from .sglang import SGLangEngine

        return SGLangEngine(cfg)
    raise ValueError(f"rollout.engine={cfg.engine!r}: expected 'hf' or 'sglang'")
