"""A rough per-GPU memory estimate of the trainer (Megatron-Core, bf16 weights, distributed optimizer).

An estimate, not a measurement: it counts model states exactly from the architecture and the parallel layout, and
activations with the usual transformer formula, and leaves out the CUDA context, NCCL buffers, the allocator's
fragmentation and temporary buffers (budget several GiB for those), and the colocated rollout engine.

Model states per parameter held by a GPU (Megatron mixed precision, the table in Megatron-LM's distributed
optimizer docs): bf16 weight 2 B + fp32 main gradient 4 B, plus fp32 master weight, Adam m and v, 12 B, divided by
the data-parallel size when the distributed optimizer shards them (else on every rank).

A GPU holds 1/TP of the weight matrices of its pipeline stage's layers (norm weights replicated), the first stage
also the (vocab-parallel) embedding, the last stage the output layer (with PP > 1 a tied output layer is a
separate copy on the last stage).

Activations per layer and micro-batch of s*b tokens (Korthikanti et al. 2022, "Reducing Activation Recomputation
in Large Transformer Models", with flash attention, so no s^2 term, and sequence parallelism, so everything / TP):
`34 * s*b*h / TP` bytes; with full recomputation only the layer input, `2 * s*b*h / TP`, plus one layer's full
activations while it is recomputed. With 1F1B pipelining the
first stage keeps PP micro-batches in flight, so its activation memory is that of L/PP layers x PP micro-batches.
The loss needs the fp32 logits and their softmax over the vocabulary shard, `2 * 4 * s*b*V / TP` bytes, on the
last stage. The formula was derived for a 4h GELU MLP and multi-head attention; SwiGLU and grouped-query attention
shift it by some tens of percent either way. Each term is taken at its largest over the pipeline stages (model
states on the last stage, activations on the first), so with PP > 1 the total is slightly pessimistic.

    python -m prefix_rft_megatron.launch.memory --hf-config MODEL/config.json --world-size 64 CONFIG.yaml [k=v ...]
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any, Dict, Mapping

GiB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers that size memory (names as in an HF config.json)."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int  # SwiGLU: gate, up and down projections each hidden x ffn
    num_attention_heads: int
    num_kv_heads: int
    vocab_size: int
    tied_embeddings: bool = False
    qkv_bias: bool = False  # Qwen2 has biases on q, k, v

    @classmethod
    def from_hf_config(cls, c: Mapping[str, Any]) -> "ModelShape":
        return cls(
            num_layers=c["num_hidden_layers"], hidden_size=c["hidden_size"], ffn_hidden_size=c["intermediate_size"],
            num_attention_heads=c["num_attention_heads"],
            num_kv_heads=c.get("num_key_value_heads", c["num_attention_heads"]), vocab_size=c["vocab_size"],
            tied_embeddings=bool(c.get("tie_word_embeddings", False)),
            qkv_bias=c.get("model_type") == "qwen2" or bool(c.get("attention_bias", False)),
        )  # fmt: skip

    @property
    def kv_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads * self.num_kv_heads

    def layer_params(self) -> tuple[int, int]:
        """(TP-sharded, replicated) parameters of one transformer layer."""
        h, f = self.hidden_size, self.ffn_hidden_size
        attn = h * h + 2 * h * self.kv_dim + h * h  # q, k, v, o
        bias = (h + 2 * self.kv_dim) if self.qkv_bias else 0
        return attn + bias + 3 * h * f, 2 * h  # + two RMSNorm weights

    def num_params(self) -> int:
        sharded, replicated = self.layer_params()
        emb = self.vocab_size * self.hidden_size
        return self.num_layers * (sharded + replicated) + emb * (1 if self.tied_embeddings else 2) + self.hidden_size


# Reference architectures (from their HF config.json).
QWEN25_MATH_7B = ModelShape(num_layers=28, hidden_size=3584, ffn_hidden_size=18944, num_attention_heads=28,
                            num_kv_heads=4, vocab_size=152064, tied_embeddings=False, qkv_bias=True)
LLAMA3_70B = ModelShape(num_layers=80, hidden_size=8192, ffn_hidden_size=28672, num_attention_heads=64,
                        num_kv_heads=8, vocab_size=128256, tied_embeddings=False, qkv_bias=False)


def params_per_gpu(shape: ModelShape, tp: int, pp: int) -> int:
    """Parameters held by the most loaded GPU (first or last pipeline stage)."""
    if shape.num_layers % pp:
        raise ValueError(f"num_layers={shape.num_layers} is not divisible by pp={pp}")
    sharded, replicated = shape.layer_params()
    layers = shape.num_layers // pp * (sharded // tp + replicated)
    emb = math.ceil(shape.vocab_size / tp) * shape.hidden_size
    first = layers + emb
    last_out = 0 if (shape.tied_embeddings and pp == 1) else emb
    last = layers + last_out + shape.hidden_size + (emb if pp == 1 else 0)
    return first if pp > 1 and first > last else last


def estimate_memory(
    shape: ModelShape,
    tp: int,
    pp: int,
    dp: int,
    seq_len: int,
    micro_batch_size: int = 1,
    distributed_optimizer: bool = True,
    recompute: bool = False,
) -> Dict[str, float]:
    """Per-GPU estimate in GiB: weights, grads, optimizer, activations, logits, total (see the module docstring)."""
    n = params_per_gpu(shape, tp, pp)
    weights = 2 * n
    grads = 4 * n
    optimizer = 12 * n / (dp if distributed_optimizer else 1)
    tokens = seq_len * micro_batch_size
    per_layer = (2 if recompute else 34) * tokens * shape.hidden_size / tp
    in_flight = pp  # 1F1B: the first stage holds pp micro-batches' activations
    activations = per_layer * (shape.num_layers // pp) * in_flight
    if recompute:  # the layer being recomputed in the backward pass holds its full activations
        activations += 34 * tokens * shape.hidden_size / tp
    logits = 2 * 4 * tokens * math.ceil(shape.vocab_size / tp)
    out = {
        "params_per_gpu": float(n),
        "weights_gib": weights / GiB,
        "grads_gib": grads / GiB,
        "optimizer_gib": optimizer / GiB,
        "activations_gib": activations / GiB,
        "logits_gib": logits / GiB,
    }
    out["total_gib"] = sum(v for k, v in out.items() if k.endswith("_gib"))
    return out


def format_estimate(est: Dict[str, float]) -> str:
    parts = [f"{k[:-4]} {v:.1f}" for k, v in est.items() if k.endswith("_gib") and k != "total_gib"]
    return f"~{est['total_gib']:.0f} GiB per GPU ({', '.join(parts)} GiB; {est['params_per_gpu'] / 1e9:.2f}B params)"


def estimate_for_config(cfg, shape: ModelShape, world_size: int) -> Dict[str, float]:
    """The estimate for a training `Config` on `world_size` GPUs: its TP/PP, DP = world / (TP x PP), sequences of
    data.max_prompt_tokens + rollout.max_new_tokens, train.micro_batch_size, model.recompute_activations."""
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    if world_size % (tp * pp):
        raise ValueError(f"world size {world_size} is not a multiple of tp x pp = {tp * pp}")
    return estimate_memory(
        shape, tp, pp, world_size // (tp * pp), cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens,
        cfg.train.micro_batch_size, cfg.parallel.use_distributed_optimizer, cfg.model.recompute_activations,
    )  # fmt: skip


def main(argv=None) -> int:
    import argparse

    from prefix_rft_megatron.config import ConfigError, load_config

    p = argparse.ArgumentParser(prog="python -m prefix_rft_megatron.launch.memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-config", required=True, help="the model's HF config.json")
    p.add_argument("--world-size", type=int, required=True, help="training GPUs (nodes x GPUs per node)")
    p.add_argument("config", nargs="*", help="CONFIG.yaml files and key=value overrides")
    a = p.parse_args(argv)
    files = [c for c in a.config if c.endswith((".yaml", ".yml")) and "=" not in c]
    try:
        cfg = load_config(files, [c for c in a.config if c not in files])
        with open(a.hf_config) as f:
            shape = ModelShape.from_hf_config(json.load(f))
        print(format_estimate(estimate_for_config(cfg, shape, a.world_size)) + " -- an estimate, see the docstring")
    except (ConfigError, ValueError, OSError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
