"""Per-GPU memory of the trainer (and a colocated SGLang engine), term by term, for each pipeline stage.

An estimate from the architecture and the layout, used by `prefix-rft launch --check` (`launch.preflight`). Every
term is counted on the rank that holds the most of it within its pipeline stage (TP rank 0, DP rank 0).

Model states per parameter a rank holds (Megatron mixed precision, the distributed optimizer's table): the weight
(2 B bf16, 4 B fp32), its fp32 main gradient (4 B, `grad_reduce_in_fp32`), and the optimizer's fp32 master weight
(bf16 only) plus Adam's m and v (4 B each), divided by DP under the distributed optimizer. A rank holds 1/TP of its
stage's layer matrices (norm weights whole), the first stage the vocab-parallel embedding, the last stage the final
norm and the output layer (a copy of the embedding when tied and PP > 1). The vocabulary is padded to a multiple of
make_vocab_size_divisible_by x TP. `stage_params` is checked against a model built on the meta device (tests).

Activations saved for backward per layer and micro-batch of T = s*b tokens (Korthikanti et al. 2022's accounting,
redone for this model: RMSNorm, grouped-query attention with a fused attention kernel, so no s^2 term, SwiGLU, no
dropout since hidden and attention dropout are 0), in elements of the activation dtype, with Transformer Engine:
    the two norms' inputs and the two linears' inputs after them (q/k/v and fc1)    4 h      (/ TP with SP)
    attention's q, k, v and output                                            (2 nq + 2 nkv) d / TP
    SwiGLU: fc1's output (gate and up) and fc2's input                                3 f / TP
Without sequence parallelism the first term is whole on every TP rank. The same accounting for this project's CPU
layer spec (`ACTIVATION_TERMS["local"]`) matches the tensors a tiny model really saves to 0.1%
(tests/launch/test_memory_estimate.py); the TE terms could not be measured here (no GPU). With full recomputation (one
layer per checkpoint) a layer keeps only its input (T*h, / TP with SP), and one layer's full set lives while it is
recomputed. 1F1B keeps min(PP - stage, micro-batches) micro-batches in flight on a stage.

The loss: the logits of one micro-batch, [T, V/TP] in the parameter dtype, and the fp32 copy the vocab-parallel
log-prob/entropy keeps from the forward to the backward. Pipeline p2p buffers: a send and a receive [T, h] (/ TP with
SP). Weight sync (after the step, with activations freed): every TP rank gathers each parameter whole (TP shards and
the merged tensor: twice the largest, the embedding), and the sending rank holds one bucket and its flattened copy.

Colocated SGLang (train.colocate, rollout.engine=sglang): sglang 0.5.23 leaves (1 - mem_fraction_static) of the
memory free *when it starts* (model_runner `pre_model_load_memory`), so it takes mem_fraction_static x (GPU - what
the trainer holds then); that is its weights (bf16, / its TP) plus the KV cache. The trainer then holds its
weights, gradients and fp32 master shard (Adam's m and v come with the first step, while the engine is released).
After a step the engine takes its weights back first, the sync runs, and only then its KV cache (train/colocated.py,
as slime does): the generation peak is the larger of the engine's whole share and its weights plus the sync
transient.

Not counted, and budgeted as one `reserve` (default 5 GiB): the CUDA context, NCCL's buffers, the allocator's
fragmentation and temporaries of the kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List

from prefix_rft_megatron.model.arch import ModelArch

GiB = 2**30
DEFAULT_RESERVE_GIB = 5.0


@dataclass(frozen=True)
class Layout:
    """What sizes memory besides the architecture: the parallel layout and the shape of one micro-batch."""

    tp: int
    pp: int
    dp: int
    seq_len: int  # tokens of the longest training sequence (prompt + response)
    micro_batch_size: int = 1
    num_microbatches: int = 1  # micro-batches of one optimizer update on a DP rank
    sequence_parallel: bool = True
    recompute: bool = False  # full activation recomputation, one layer per checkpoint
    distributed_optimizer: bool = True
    param_bytes: int = 2  # bf16 weights and activations; 4 for fp32
    make_vocab_size_divisible_by: int = 128
    bucket_bytes: int = 512 * 2**20  # rollout.weight_bucket_mib
    max_tokens_per_micro_batch: int = 0  # train.max_tokens_per_micro_batch (0: micro_batch_size x seq_len)
    reference_model: bool = False  # algorithm.loss.kl_coef > 0: a frozen copy of the weights for the KL term

    @property
    def sp(self) -> bool:
        return self.sequence_parallel and self.tp > 1

    @property
    def tokens(self) -> int:
        """Tokens of the largest micro-batch: the token budget (a longer sequence goes alone), else the count times
        the longest sequence."""
        if self.max_tokens_per_micro_batch:
            return max(self.max_tokens_per_micro_batch, self.seq_len)
        return self.seq_len * self.micro_batch_size


def padded_vocab(arch: ModelArch, lay: Layout) -> int:
    return arch.padded_vocab_size(lay.tp, lay.make_vocab_size_divisible_by)


def layer_params(arch: ModelArch) -> tuple[int, int]:
    """(TP-split, replicated) parameters of one transformer layer."""
    h, f, d = arch.hidden_size, arch.ffn_hidden_size, arch.head_dim
    q, kv = arch.num_attention_heads * d, arch.num_query_groups * d
    split = h * (q + 2 * kv) + q * h + 3 * h * f + ((q + 2 * kv) if arch.qkv_bias else 0)
    return split, 2 * h


def stage_params(arch: ModelArch, lay: Layout, stage: int) -> int:
    """Parameters held by one rank of pipeline stage `stage`."""
    split, replicated = layer_params(arch)
    n = arch.num_layers // lay.pp * (split // lay.tp + replicated)
    emb = padded_vocab(arch, lay) // lay.tp * arch.hidden_size
    first, last = stage == 0, stage == lay.pp - 1
    if first:
        n += emb
    if last:
        n += arch.hidden_size  # final norm
        if not arch.tie_word_embeddings or lay.pp > 1:
            n += emb  # output layer (with tied embeddings and PP > 1 the last stage keeps its own copy)
    return n


# Elements saved for backward per token of one layer: (whole on every TP rank unless SP, split over TP), as
# multiples of h (hidden), q = heads x head_dim, kv = KV heads x head_dim and f (ffn).
ACTIVATION_TERMS = {
    # TE: fused norm+linear keeps each norm's input and its output (the linear's input); fused attention keeps q, k,
    # v and its output; the fused MLP keeps fc1's output (gate and up) and the activation's output (fc2's input).
    "transformer_engine": {"h_seq": 4, "q": 2, "kv": 2, "f": 3},
    # this project's CPU spec (measured, tests/launch/test_memory_estimate.py): torch's RMSNorm also keeps its
    # normalised input (3 per norm); SDPA gets k and v repeated to every query head (so 4 q-sized tensors); the
    # unfused SwiGLU keeps silu(gate) and two more f-sized tensors besides fc1's output.
    "local": {"h_seq": 6, "q": 4, "kv": 0, "f": 5},
}


def layer_activation_bytes(arch: ModelArch, lay: Layout, impl: str = "transformer_engine") -> int:
    """Bytes one layer saves for backward for one micro-batch (terms in ACTIVATION_TERMS; the local spec's small
    per-token statistics, norms' rstd and attention's log-sum-exp, are left out)."""
    c = ACTIVATION_TERMS[impl]
    seq_split = lay.tp if lay.sp else 1
    q, kv = arch.num_attention_heads * arch.head_dim, arch.num_query_groups * arch.head_dim
    elems = c["h_seq"] * arch.hidden_size / seq_split + (c["q"] * q + c["kv"] * kv + c["f"] * arch.ffn_hidden_size) / lay.tp
    return int(lay.tokens * lay.param_bytes * elems)


def activation_bytes(arch: ModelArch, lay: Layout, stage: int, recompute: bool | None = None) -> int:
    recompute = lay.recompute if recompute is None else recompute
    layers = arch.num_layers // lay.pp
    in_flight = min(lay.pp - stage, lay.num_microbatches)
    one_layer = layer_activation_bytes(arch, lay)
    if not recompute:
        return layers * in_flight * one_layer
    layer_input = lay.tokens * arch.hidden_size * lay.param_bytes // (lay.tp if lay.sp else 1)
    return layers * in_flight * layer_input + one_layer


def logits_bytes(arch: ModelArch, lay: Layout, stage: int) -> int:
    if stage != lay.pp - 1:
        return 0
    return lay.tokens * padded_vocab(arch, lay) // lay.tp * (lay.param_bytes + 4)


def pp_buffer_bytes(arch: ModelArch, lay: Layout) -> int:
    if lay.pp == 1:
        return 0
    return 2 * lay.tokens * arch.hidden_size * lay.param_bytes // (lay.tp if lay.sp else 1)


def sync_peak_bytes(arch: ModelArch, lay: Layout, stage: int) -> int:
    largest = padded_vocab(arch, lay) * arch.hidden_size * lay.param_bytes
    bucket = 2 * lay.bucket_bytes if stage == 0 else 0  # the owner (stage 0) assembles and flattens buckets
    return 2 * largest + bucket


@dataclass
class Engine:
    """A colocated SGLang engine on each GPU (None of these when the engine runs elsewhere)."""

    mem_fraction_static: float
    tp_size: int
    num_params: int  # the whole model's


@dataclass
class StageMemory:
    stage: int
    params: int
    terms: Dict[str, float] = field(default_factory=dict)  # GiB
    train_peak: float = 0.0
    gen_peak: float = 0.0  # with a colocated engine generating (else 0)
    engine_kv: float = 0.0  # GiB of KV cache the colocated engine gets


def estimate(arch: ModelArch, lay: Layout, engine: Engine | None = None,
             reserve_gib: float = DEFAULT_RESERVE_GIB, gpu_gib: float = 80.0) -> List[StageMemory]:
    """Per-stage terms (GiB) and peaks: training (model states + the larger of step activations and the weight-sync
    transient + reserve) and, with a colocated engine, generation (trainer resident + engine)."""
    out = []
    master = 4 if lay.param_bytes < 4 else 0
    for s in range(lay.pp):
        p = stage_params(arch, lay, s)
        opt = p * (master + 8) / (lay.dp if lay.distributed_optimizer else 1)
        t = {
            "weights": p * lay.param_bytes / GiB,
            "gradients (fp32)": p * 4 / GiB,
            "optimizer (master, Adam m, v)": opt / GiB,
            "activations, no recompute": activation_bytes(arch, lay, s, recompute=False) / GiB,
            "activations, full recompute": activation_bytes(arch, lay, s, recompute=True) / GiB,
            "logits + fp32 copy": logits_bytes(arch, lay, s) / GiB,
            "pipeline buffers": pp_buffer_bytes(arch, lay) / GiB,
            "weight-sync peak": sync_peak_bytes(arch, lay, s) / GiB,
            "reserve (context, NCCL, fragmentation)": reserve_gib,
        }
        if lay.reference_model:  # same layout, same dtype, no gradients or optimizer state
            t["reference weights (KL)"] = t["weights"]
        states = t["weights"] + t["gradients (fp32)"] + t["optimizer (master, Adam m, v)"] \
            + t.get("reference weights (KL)", 0.0)
        step = t["activations, full recompute" if lay.recompute else "activations, no recompute"] \
            + t["logits + fp32 copy"] + t["pipeline buffers"]
        sm = StageMemory(s, p, t, train_peak=states + max(step, t["weight-sync peak"]) + reserve_gib)
        if engine is not None:
            resident_at_start = t["weights"] + t.get("reference weights (KL)", 0.0) + t["gradients (fp32)"] \
                + p * master / lay.dp / GiB + reserve_gib
            engine_total = engine.mem_fraction_static * (gpu_gib - resident_at_start)
            engine_weights = engine.num_params * 2 / engine.tp_size / GiB
            sm.engine_kv = engine_total - engine_weights
            t["engine weights (colocated)"] = engine_weights
            t["engine KV cache (colocated)"] = sm.engine_kv
            t["weight sync into the engine (colocated)"] = engine_weights + t["weight-sync peak"]
            sm.gen_peak = states + reserve_gib + max(engine_total, t["weight sync into the engine (colocated)"])
        out.append(sm)
    return out


def kv_bytes_per_token(arch: ModelArch, engine_tp: int) -> float:
    """K and V of every layer for one token on one engine GPU (bf16)."""
    return 2 * arch.num_layers * math.ceil(arch.num_query_groups / engine_tp) * arch.head_dim * 2
