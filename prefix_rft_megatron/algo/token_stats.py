"""Per-token log-probability and entropy from Megatron's vocab-parallel logits.

Layout: any leading shape, vocabulary last. Megatron's GPTModel returns `[batch, seq, vocab/tp]` when called
without labels (and `[seq, batch, vocab/tp]` from the output layer itself); both work, `target` has the leading shape.
Each TP rank holds a contiguous slice of the (padded) vocabulary: rank r holds ids [r * V/tp, (r + 1) * V/tp).

With `z = logits / T` (T the sampling temperature), `m = max_v z_v`, `S = sum_v exp(z_v - m)`:
    log p(y) = (z_y - m) - log S
    H        = log S - (sum_v exp(z_v - m) * (z_v - m)) / S
Four TP all-reduces carry the pieces: the max (MAX), then S, the target logit and `sum exp(z - m) (z - m)` in one
packed SUM. No rank ever holds the full vocabulary, and one fp32 copy of the logits lives from the forward to the
backward: it becomes the softmax `p` in place, and the backward turns it into the gradient in place (as in
megatron's `vocab_parallel_cross_entropy`; hence the graph can be back-propagated once, not retained).

Gradients (per row, w.r.t. the logits; divide by T because z = logits / T):
    d log p(y) / d z_v = 1[v = y] - p_v
    d H / d z_v        = -p_v * (log p_v + H)
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from prefix_rft_megatron.parallel import collectives

# Row chunks of about this many elements bound the temporaries of exp and p*log p (16 MiB in fp32).
_CHUNK_ELEMENTS = 1 << 22


def _tp_group_rank_size() -> tuple[object | None, int, int]:
    from megatron.core import parallel_state

    if not parallel_state.model_parallel_is_initialized():
        return None, 0, 1
    return (
        parallel_state.get_tensor_model_parallel_group(),
        parallel_state.get_tensor_model_parallel_rank(),
        parallel_state.get_tensor_model_parallel_world_size(),
    )


def _row_chunks(num_rows: int, row_len: int):
    step = max(1, _CHUNK_ELEMENTS // max(row_len, 1))
    for start in range(0, num_rows, step):
        yield start, min(start + step, num_rows)


def _chunk_buffer(num_rows: int, row_len: int, device) -> torch.Tensor:
    step = max(1, _CHUNK_ELEMENTS // max(row_len, 1))
    return torch.empty(min(step, num_rows), row_len, dtype=torch.float32, device=device)


class _VocabParallelTokenStats(torch.autograd.Function):
    @staticmethod
    def forward(ctx, vocab_parallel_logits: torch.Tensor, target: torch.Tensor, temperature: float):
        group, rank, world = _tp_group_rank_size()
        part = vocab_parallel_logits.size(-1)
        lead_shape = vocab_parallel_logits.shape[:-1]
        if target.shape != lead_shape:
            raise ValueError(
                f"token_stats: target shape {tuple(target.shape)} != logits leading shape {tuple(lead_shape)}"
            )

        # The one fp32 copy: it holds z, then z - m, then exp(z - m), then p.
        z = torch.empty(lead_shape + (part,), dtype=torch.float32, device=vocab_parallel_logits.device)
        z.copy_(vocab_parallel_logits)
        if temperature != 1.0:
            z.div_(temperature)
        z2 = z.view(-1, part)
        rows = z2.size(0)

        logits_max = z2.max(dim=-1)[0]
        if world > 1:
            collectives.all_reduce(logits_max, op=dist.ReduceOp.MAX, group=group)
        z2.sub_(logits_max.unsqueeze(-1))

        vocab_start = rank * part
        target_1d = target.reshape(-1)
        off_slice = (target_1d < vocab_start) | (target_1d >= vocab_start + part)
        local_target = (target_1d - vocab_start).masked_fill(off_slice, 0)
        arange = torch.arange(rows, device=z2.device)

        # stats[0] = sum exp(z - m), stats[1] = sum exp(z - m) * (z - m), stats[2] = (z - m)[target]
        stats = torch.empty(3, rows, dtype=torch.float32, device=z2.device)
        stats[2] = z2[arange, local_target].masked_fill(off_slice, 0.0)
        buf = _chunk_buffer(rows, part, z2.device)  # one reused temporary: no allocation (page faults) per chunk
        for a, b in _row_chunks(rows, part):
            e = torch.exp(z2[a:b], out=buf[: b - a])
            stats[0, a:b] = e.sum(dim=-1)
            # sum() is pairwise (accurate over 1e5 terms in fp32); a dot product here lost ~1e-4 relative.
            stats[1, a:b] = z2[a:b].mul_(e).sum(dim=-1)
            z2[a:b].copy_(e)
        del buf
        if world > 1:
            collectives.all_reduce(stats, op=dist.ReduceOp.SUM, group=group)
        sum_exp, sum_exp_z, target_z = stats[0], stats[1], stats[2]

        log_sum_exp = torch.log(sum_exp)
        logprob = target_z - log_sum_exp
        entropy = log_sum_exp - sum_exp_z / sum_exp
        z2.div_(sum_exp.unsqueeze(-1))  # z now holds the softmax p

        ctx.temperature = temperature
        ctx.input_dtype = vocab_parallel_logits.dtype
        ctx.save_for_backward(z, local_target, off_slice, entropy)
        ctx.set_materialize_grads(False)
        return logprob.view(lead_shape), entropy.view(lead_shape)

    @staticmethod
    def backward(ctx, grad_logprob, grad_entropy):
        probs, local_target, off_slice, entropy = ctx.saved_tensors
        part = probs.size(-1)
        p2 = probs.view(-1, part)  # consumed in place: becomes the gradient
        rows = p2.size(0)
        g_lp = grad_logprob.reshape(-1).float() if grad_logprob is not None else torch.zeros(rows, device=p2.device)
        g_h = grad_entropy.reshape(-1).float() if grad_entropy is not None else None

        # grad = g_lp * (onehot - p) - g_h * (p log p + p H)
        #      = p * (-(g_lp + g_h * H)) - g_h * xlogy(p, p) + g_lp * onehot
        row_scale = -g_lp if g_h is None else -(g_lp + g_h * entropy)
        if g_h is None:
            p2.mul_(row_scale.unsqueeze(-1))
        else:
            buf = _chunk_buffer(rows, part, p2.device)
            for a, b in _row_chunks(rows, part):
                chunk = p2[a:b]
                plogp = torch.xlogy(chunk, chunk, out=buf[: b - a])
                chunk.mul_(row_scale[a:b].unsqueeze(-1))
                chunk.sub_(plogp.mul_(g_h[a:b].unsqueeze(-1)))
            del buf
        arange = torch.arange(rows, device=p2.device)
        p2[arange, local_target] += g_lp.masked_fill(off_slice, 0.0)
        if ctx.temperature != 1.0:
            p2.div_(ctx.temperature)
        grad = probs if ctx.input_dtype == torch.float32 else probs.to(ctx.input_dtype)
        return grad, None, None


def vocab_parallel_token_stats(
    vocab_parallel_logits: torch.Tensor, target: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p(target), entropy) per position, float32, shape = target.shape; both carry gradients.

    vocab_parallel_logits: [..., vocab/tp] this TP rank's slice (any float dtype); target: [...] int64 token ids in
    the full (padded) vocabulary. Detach the entropy for the prefix mask; keep its graph only for the entropy bonus.
    Uses the tensor-parallel group of megatron's parallel_state (a world of one if it is not initialised).
    """
    if temperature <= 0:
        raise ValueError(f"token_stats: temperature must be > 0 (got {temperature})")
    return _VocabParallelTokenStats.apply(vocab_parallel_logits, target.long(), float(temperature))
