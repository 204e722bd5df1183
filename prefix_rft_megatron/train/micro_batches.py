"""How the rows of a mini-batch become micro-batches, and how each DP rank's share of a mini-batch is chosen.

Rows are sequences of the step batch ([N, S] tensors, `train.batch`), each with its real length (positions that
hold tokens). A micro-batch is a list of rows in one of three layouts:
- padded: `train.micro_batch_size` rows, each padded to the step's longest (one shape for the whole step);
- token budget (`train.max_tokens_per_micro_batch`): rows bin-packed by length (first-fit decreasing) so that
  rows x the micro-batch's own longest stays within the budget, padded only to that longest;
- packed (`train.packing`): the micro-batch's rows laid end to end in one row of sum(lengths) positions (THD), with
  `cu_seqlens` marking where each sequence starts: attention never crosses a boundary and RoPE positions restart
  per sequence. With a token budget the sum of real lengths stays within it.
A sequence longer than the budget goes alone. Lengths are rounded up to `multiple_of` (TP with sequence
parallelism splits the sequence dimension); a packed row's rounding is one extra padding segment.

Which rows train where never changes what a step computes: the loss is a sum over tokens with layout-free constants
(algo.loss), so every layout gives the same gradient up to float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

@dataclass(frozen=True)
class MicroBatchLayout:
    """The micro-batch rule of a run (train.micro_batch_size, train.max_tokens_per_micro_batch, packing)."""

    micro_batch_size: int
    max_tokens: int = 0  # 0: by count (micro_batch_size rows)
    packed: bool = False
    multiple_of: int = 1

    @property
    def fixed_shape(self) -> bool:
        """Every micro-batch of the step has one shape: [micro_batch_size, step length]."""
        return not self.packed and not self.max_tokens


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


@dataclass
class MicroBatchRows:
    """One micro-batch: `rows` (indices into the step's [N, S] tensors) and how they are laid out."""

    rows: list[int]
    lengths: list[int]  # real positions of each row
    width: int  # positions per row of the laid-out tensor (packed: the whole pack)
    packed: bool

    @property
    def num_sequences(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int]:
        return (1, self.width) if self.packed else (len(self.rows), self.width)

    def gather(self, t: torch.Tensor) -> torch.Tensor:
        """This micro-batch's slice of a per-token tensor [N, S] of the step, laid out as `shape`."""
        if not self.packed:
            return t[self.rows, :self.width]
        out = t.new_zeros((1, self.width))
        start = 0
        for r, n in zip(self.rows, self.lengths):
            out[0, start:start + n] = t[r, :n]
            start += n
        return out

    def scatter(self, laid_out: torch.Tensor, into: torch.Tensor) -> None:
        """Write a per-token result of this micro-batch (shape `shape`) back into the step's rows of `into` [N, S]."""
        laid_out = laid_out.to(into.dtype)
        if not self.packed:
            into[self.rows, :self.width] = laid_out
            return
        start = 0
        for r, n in zip(self.rows, self.lengths):
            into[r, :n] = laid_out[0, start:start + n]
            start += n

    def segments(self) -> list[int]:
        """Packed: the lengths of the pack's segments, the rounding tail as its own segment."""
        tail = self.width - sum(self.lengths)
        return list(self.lengths) + ([tail] if tail else [])

    def position_ids(self) -> torch.Tensor:
        if not self.packed:
            return torch.arange(self.width).unsqueeze(0).expand(len(self.rows), -1)
        return torch.cat([torch.arange(n) for n in self.segments()]).unsqueeze(0)

    def packed_seq_params(self, device=None):
        """Megatron's PackedSeqParams (THD) for a packed micro-batch; None for a padded one."""
        if not self.packed:
            return None
        from megatron.core.packed_seq_params import PackedSeqParams

        segs = self.segments()
        cu = torch.zeros(len(segs) + 1, dtype=torch.int32)
        cu[1:] = torch.tensor(segs, dtype=torch.int32).cumsum(0)
        cu = cu.to(device) if device is not None else cu
        return PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=max(segs),
                               max_seqlen_kv=max(segs))


def plan_micro_batches(rows: Sequence[int], lengths: Sequence[int], layout: MicroBatchLayout,
                       step_length: int) -> list[MicroBatchRows]:
    """The micro-batches of one DP rank's rows of a mini-batch (`lengths[i]`: real positions of `rows[i]`;
    `step_length`: positions per row of the step batch). Deterministic: every PP stage of the rank plans the same."""
    rows, lengths = list(rows), list(lengths)
    m = layout.multiple_of
    if not layout.max_tokens:
        groups = [list(range(i, min(i + layout.micro_batch_size, len(rows))))
                  for i in range(0, len(rows), layout.micro_batch_size)]
    else:
        groups = _first_fit_decreasing(lengths, layout.max_tokens, layout.packed, m)
    out = []
    for g in groups:
        lens = [lengths[i] for i in g]
        if layout.packed:
            width = _round_up(sum(lens), m)
        elif layout.max_tokens:
            width = _round_up(max(lens), m)
        else:
            width = step_length
        out.append(MicroBatchRows([rows[i] for i in g], lens, width, layout.packed))
    return out


def _first_fit_decreasing(lengths: list[int], budget: int, packed: bool, multiple_of: int) -> list[list[int]]:
    """Bins of indices into `lengths` whose cost stays within `budget` (packed: the rounded sum of lengths;
    padded: rows x the rounded longest); longest first, ties by index. A longer-than-budget item goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    costs: list[tuple[int, int]] = []  # (sum of lengths, longest) per bin

    def cost(total: int, longest: int, n: int) -> int:
        return _round_up(total, multiple_of) if packed else n * _round_up(longest, multiple_of)

    for i in order:
        n = lengths[i]
        for b, (total, longest) in enumerate(costs):
            if cost(total + n, max(longest, n), len(bins[b]) + 1) <= budget:
                bins[b].append(i)
                costs[b] = (total + n, max(longest, n))
                break
        else:
            bins.append([i])
            costs.append((n, n))
    return [sorted(b) for b in bins]


def balanced_shares(lengths: Sequence[int], dp: int) -> list[list[int]]:
    """Split indices 0..n-1 (one mini-batch) over `dp` ranks: equal counts (n / dp each, n divisible by dp), tokens
    balanced greedily (longest first to the rank with the fewest tokens that still has room). Each share is sorted."""
    n = len(lengths)
    per = n // dp
    shares: list[list[int]] = [[] for _ in range(dp)]
    tokens = [0] * dp
    for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
        r = min((r for r in range(dp) if len(shares[r]) < per), key=lambda r: (tokens[r], r))
        shares[r].append(i)
        tokens[r] += lengths[i]
    return [sorted(s) for s in shares]
