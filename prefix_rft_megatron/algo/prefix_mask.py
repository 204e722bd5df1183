"""Entropy-based selection of the prefix tokens that keep their advantage (prefix-rft.md section 4).

Every prefix token gets a score (`top`: its entropy, `bottom`: minus its entropy, `random`: a uniform draw seeded by
(seed, step, sample index, rank of the token among its sequence's prefix tokens)); the tokens with the highest
scores are kept.

Kept set, exactly: among n scores, k = ceil(rho * n) (rho = 1 keeps all); the threshold tau is the k-th largest
score; every token with score >= tau is kept. Ties at tau are all kept (so slightly more than k may be kept when
scores tie), which depends only on the multiset of scores, not on their order or their split across ranks.

`scope: batch` takes n over all prefix tokens of the step batch on all data-parallel ranks: the scores are
all-gathered over the DP group (variable sizes: the sizes are gathered first), so every rank computes the same tau
and the kept set is the same for any TP / PP / DP / micro-batch layout, up to the floating-point round-off of the
entropies themselves (two entropies within ~1e-6 of each other at the threshold may swap between layouts).
`scope: microbatch` ranks within each micro-batch (the reference's behaviour).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.distributed as dist

from prefix_rft_megatron.algo.config import MaskScope, MaskSelection, PrefixMaskConfig
from prefix_rft_megatron.parallel import collectives
from prefix_rft_megatron.parallel.backends import compute_device_type

_STREAM_RANDOM_MASK = 0x4D41_534B  # "MASK": separate from the prefix-length stream of the same (seed, step, sample)


def kept_count(rho: float, n: int) -> int:
    """k = ceil(rho * n), computed so that e.g. 0.2 * 15 counts 3, not 4 (float round-off above an integer), and at
    least 1 when n > 0 (prefix-rft.md section 4: a tiny rho still keeps the top token rather than none)."""
    if n == 0:
        return 0
    return min(n, max(1, math.ceil(round(rho * n, 6))))


def selection_scores(
    entropy: torch.Tensor,
    prefix_mask: torch.Tensor,
    selection: MaskSelection,
    seed: int = 0,
    step: int = 0,
    sample_indices: torch.Tensor | Sequence[int] | None = None,
) -> torch.Tensor:
    """Scores [B, S] float32 (higher = kept first); only the positions in `prefix_mask` matter.

    `sample_indices` ([B], layout-independent ids of the sequences in the step) is needed for `random` only.
    """
    entropy = entropy.detach().float()
    if selection == MaskSelection.TOP:
        return entropy
    if selection == MaskSelection.BOTTOM:
        return -entropy
    if selection == MaskSelection.RANDOM:
        if sample_indices is None:
            raise ValueError("prefix_mask: selection=random needs the sequences' sample indices")
        scores = torch.zeros_like(entropy)
        prefix_mask = prefix_mask.to(torch.bool)
        for row, sample in enumerate(torch.as_tensor(sample_indices).tolist()):
            positions = torch.nonzero(prefix_mask[row]).view(-1)
            rng = np.random.default_rng(np.random.SeedSequence([seed, step, int(sample), _STREAM_RANDOM_MASK]))
            draws = torch.from_numpy(rng.random(positions.numel())).float()
            scores[row, positions] = draws.to(scores.device)
        return scores
    raise AssertionError(f"unknown selection {selection}")


def _threshold(scores: torch.Tensor, rho: float) -> torch.Tensor | None:
    """tau over a 1-D tensor of scores (None when empty)."""
    n = scores.numel()
    if n == 0:
        return None
    k = kept_count(rho, n)
    return torch.topk(scores, k, sorted=False).values.min()


def _all_gather_variable(local: torch.Tensor, group) -> torch.Tensor:
    """Concatenate 1-D tensors of different lengths from every rank of `group` (rank order)."""
    world = dist.get_world_size(group)
    if world == 1:
        return local
    size = torch.tensor([local.numel()], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    collectives.all_gather(sizes, size, group=group)
    sizes = [int(s) for s in sizes]
    padded = torch.zeros(max(sizes), dtype=local.dtype, device=local.device)
    padded[: local.numel()] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    collectives.all_gather(parts, padded, group=group)
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


def _dp_group():
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None
    return parallel_state.get_data_parallel_group(with_context_parallel=True)


def batch_threshold(local_scores: torch.Tensor, rho: float, group=None) -> torch.Tensor | None:
    """tau over the prefix-token scores of all ranks of `group` (default: megatron's DP x CP group).

    local_scores: 1-D, the scores of every prefix token this rank holds for the whole step batch.
    Returns None when the step batch has no prefix token; a 0-dim tensor otherwise (same value on every rank).
    """
    if group is None:
        group = _dp_group()
    scores = local_scores.detach().float().reshape(-1)
    if group is not None and dist.is_initialized():
        # the step's scores can be millions of floats: gathered on the compute device (NCCL on a GPU cluster)
        scores = _all_gather_variable(scores.to(compute_device_type()), group)
    tau = _threshold(scores, rho)
    return tau.to(local_scores.device) if tau is not None else None


def keep_by_threshold(scores: torch.Tensor, prefix_mask: torch.Tensor, tau: torch.Tensor | None) -> torch.Tensor:
    """Bool [B, S]: prefix tokens with score >= tau (False elsewhere)."""
    prefix_mask = prefix_mask.to(torch.bool)
    if tau is None:
        return torch.zeros_like(prefix_mask)
    return prefix_mask & (scores >= tau)


def prefix_keep_masks(
    entropies: Sequence[torch.Tensor],
    prefix_masks: Sequence[torch.Tensor],
    cfg: PrefixMaskConfig,
    seed: int = 0,
    step: int = 0,
    sample_indices: Sequence[torch.Tensor] | None = None,
    group=None,
) -> list[torch.Tensor]:
    """Kept-prefix masks for this rank's micro-batches of one step batch.

    entropies / prefix_masks: one [B_mb, S_mb] tensor per micro-batch (the detached entropies of the recompute pass
    and the demonstration-token masks); sample_indices: one [B_mb] tensor per micro-batch (for `random`).
    With `scope: batch` this is a collective over the DP group: every DP rank must call it.
    """
    if len(entropies) != len(prefix_masks):
        raise ValueError(f"prefix_mask: {len(entropies)} entropy tensors for {len(prefix_masks)} masks")
    masks = [m.to(torch.bool) for m in prefix_masks]
    if cfg.rho >= 1.0:
        return masks
    scores = [
        selection_scores(h, m, cfg.selection, seed, step, None if sample_indices is None else sample_indices[i])
        for i, (h, m) in enumerate(zip(entropies, masks))
    ]
    if cfg.scope == MaskScope.BATCH:
        local = torch.cat([s[m] for s, m in zip(scores, masks)]) if scores else torch.zeros(0)
        tau = batch_threshold(local, cfg.rho, group)
        return [keep_by_threshold(s, m, tau) for s, m in zip(scores, masks)]
    return [keep_by_threshold(s, m, _threshold(s[m], cfg.rho)) for s, m in zip(scores, masks)]


def keep_masks_for_rows(
    entropy: torch.Tensor,
    prefix_mask: torch.Tensor,
    micro_batches: Sequence[Sequence[int]],
    cfg: PrefixMaskConfig,
    seed: int = 0,
    step: int = 0,
    sample_index: torch.Tensor | None = None,
    group=None,
) -> torch.Tensor:
    """The kept-prefix mask [N, S] of this rank's rows, given as [N, S] tensors and the rows of each micro-batch
    (`micro_batches`, row indices into them, as the trainer runs them). `scope: microbatch` ranks each micro-batch's
    prefix tokens together; `scope: batch` all of them (and all DP ranks'). Rows in no micro-batch keep nothing."""
    groups = [list(rows) for rows in micro_batches]
    masks = prefix_keep_masks(
        [entropy[rows] for rows in groups], [prefix_mask[rows] for rows in groups], cfg, seed=seed, step=step,
        sample_indices=None if sample_index is None else [sample_index[rows] for rows in groups], group=group)
    keep = torch.zeros_like(prefix_mask, dtype=torch.bool)
    for rows, k in zip(groups, masks):
        keep[rows] = k
    return keep


def apply_prefix_keep(advantages: torch.Tensor, prefix_mask: torch.Tensor, keep_mask: torch.Tensor) -> torch.Tensor:
    """Advantages with the dropped prefix tokens (prefix and not kept) set to 0."""
    dropped = prefix_mask.to(torch.bool) & ~keep_mask.to(torch.bool)
    return advantages.masked_fill(dropped, 0.0)
