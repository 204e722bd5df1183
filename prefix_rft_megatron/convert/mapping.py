"""The one mapping between Hugging Face and Megatron-Core names and layouts (Llama / Qwen2).

Used by the checkpoint converters (tools/convert_*.py) and by the weight sync to rollout engines.

Megatron names here are the *canonical* ones, i.e. the keys of Megatron's distributed checkpoint (which equal the
Transformer Engine parameter names): per-layer tensors are stacked under `decoder.layers.<suffix>` with the global
layer index as a leading axis. Layouts that differ from HF:
- `linear_qkv`: rows grouped by query group g = 0..ng-1, each group [q heads of g ; k_g ; v_g]. A TP rank holds a
  contiguous run of whole groups, so concatenating TP shards along dim 0 gives this global layout.
- `linear_fc1`: global layout [gate ; up]. A TP rank holds [gate_r ; up_r], so TP shards must be split in halves
  before they are concatenated (see `merge_tp_shards`).
- Vocabulary rows padded with zeros to a multiple of make_vocab_size_divisible_by * TP.
- Tied embeddings: HF has no lm_head.weight and Megatron no output_layer.weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from prefix_rft_megatron.model.arch import ModelArch

LAYERS_PREFIX = "decoder.layers."


@dataclass(frozen=True)
class ParamRule:
    megatron: str  # full name, or the suffix after "decoder.layers.<i>." for per-layer params
    hf: tuple[str, ...]  # HF names; "{i}" is the layer index
    kind: str  # "copy" | "vocab" | "qkv" | "gate_up"
    tp_dim: int | None  # dim split across TP ranks in a live model; None = replicated
    per_layer: bool


def param_rules(arch: ModelArch) -> list[ParamRule]:
    L = "model.layers.{i}."
    rules = [
        ParamRule("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), "vocab", 0, False),
        ParamRule("self_attention.linear_qkv.layer_norm_weight", (L + "input_layernorm.weight",), "copy", None, True),
        ParamRule(
            "self_attention.linear_qkv.weight",
            tuple(L + f"self_attn.{p}_proj.weight" for p in "qkv"), "qkv", 0, True,
        ),
    ]
    if arch.qkv_bias:
        rules.append(ParamRule(
            "self_attention.linear_qkv.bias", tuple(L + f"self_attn.{p}_proj.bias" for p in "qkv"), "qkv", 0, True,
        ))
    rules += [
        ParamRule("self_attention.linear_proj.weight", (L + "self_attn.o_proj.weight",), "copy", 1, True),
        ParamRule("mlp.linear_fc1.layer_norm_weight", (L + "post_attention_layernorm.weight",), "copy", None, True),
        ParamRule("mlp.linear_fc1.weight", (L + "mlp.gate_proj.weight", L + "mlp.up_proj.weight"), "gate_up", 0, True),
        ParamRule("mlp.linear_fc2.weight", (L + "mlp.down_proj.weight",), "copy", 1, True),
        ParamRule("decoder.final_layernorm.weight", ("model.norm.weight",), "copy", None, False),
    ]
    if not arch.tie_word_embeddings:
        rules.append(ParamRule("output_layer.weight", ("lm_head.weight",), "vocab", 0, False))
    return rules


def megatron_key(rule: ParamRule) -> str:
    """Key of the (layer-stacked) tensor in Megatron's distributed checkpoint."""
    return LAYERS_PREFIX + rule.megatron if rule.per_layer else rule.megatron


def hf_names(rule: ParamRule, layer: int | None) -> list[str]:
    return [n.format(i=layer) for n in rule.hf]


def all_hf_names(arch: ModelArch) -> list[str]:
    names = []
    for rule in param_rules(arch):
        for i in range(arch.num_layers) if rule.per_layer else [None]:
            names += hf_names(rule, i)
    return names


# ---- layout transforms on full (un-sharded) tensors ----

def qkv_to_megatron(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    """HF q/k/v (weights [out, h] or biases [out]) -> Megatron's per-query-group interleaved linear_qkv."""
    ng, d = arch.num_query_groups, arch.head_dim
    rest = q.shape[1:]
    q = q.reshape(ng, arch.heads_per_group * d, *rest)
    k = k.reshape(ng, d, *rest)
    v = v.reshape(ng, d, *rest)
    return torch.cat([q, k, v], dim=1).reshape(-1, *rest)


def qkv_from_megatron(qkv: torch.Tensor, arch: ModelArch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ng, d, hpg = arch.num_query_groups, arch.head_dim, arch.heads_per_group
    rest = qkv.shape[1:]
    grouped = qkv.reshape(ng, (hpg + 2) * d, *rest)
    q, k, v = torch.split(grouped, [hpg * d, d, d], dim=1)
    return q.reshape(-1, *rest), k.reshape(-1, *rest), v.reshape(-1, *rest)


def pad_vocab(w: torch.Tensor, padded_vocab: int) -> torch.Tensor:
    if w.shape[0] == padded_vocab:
        return w
    pad = w.new_zeros(padded_vocab - w.shape[0], *w.shape[1:])
    return torch.cat([w, pad], dim=0)


def to_megatron(rule: ParamRule, hf_tensors: Sequence[torch.Tensor], arch: ModelArch, padded_vocab: int):
    """Full HF tensor(s) of one rule (one layer) -> the full Megatron tensor of that layer."""
    if rule.kind == "copy":
        return hf_tensors[0]
    if rule.kind == "vocab":
        return pad_vocab(hf_tensors[0], padded_vocab)
    if rule.kind == "qkv":
        return qkv_to_megatron(*hf_tensors, arch)
    if rule.kind == "gate_up":
        return torch.cat(list(hf_tensors), dim=0)
    raise AssertionError(rule.kind)


def to_hf(rule: ParamRule, tensor: torch.Tensor, arch: ModelArch, layer: int | None) -> list[tuple[str, torch.Tensor]]:
    """The full Megatron tensor of one rule (one layer) -> [(hf_name, tensor)], vocab padding dropped."""
    names = hf_names(rule, layer)
    if rule.kind == "copy":
        parts = [tensor]
    elif rule.kind == "vocab":
        parts = [tensor[: arch.vocab_size]]
    elif rule.kind == "qkv":
        parts = list(qkv_from_megatron(tensor, arch))
    elif rule.kind == "gate_up":
        parts = list(torch.chunk(tensor, 2, dim=0))
    else:
        raise AssertionError(rule.kind)
    return [(n, p.contiguous()) for n, p in zip(names, parts)]


# ---- live (TP-sharded) Megatron parameters ----

_LOCAL_SPEC_ALIASES = {
    # Megatron's local layer spec keeps the norms as separate modules; TE fuses them into the next linear.
    "input_layernorm.weight": "self_attention.linear_qkv.layer_norm_weight",
    "pre_mlp_layernorm.weight": "mlp.linear_fc1.layer_norm_weight",
}


def canonical_param_name(name: str, layer_offset: int = 0) -> tuple[str, int | None]:
    """A live model's parameter name -> (canonical suffix or full name, global layer index or None).

    `layer_offset` is this pipeline stage's first global layer (live names use stage-local indices).
    """
    name = name.removeprefix("module.")
    if name.startswith(LAYERS_PREFIX):
        idx, suffix = name[len(LAYERS_PREFIX):].split(".", 1)
        return _LOCAL_SPEC_ALIASES.get(suffix, suffix), int(idx) + layer_offset
    return name, None


def rule_for(canonical: str, arch: ModelArch) -> ParamRule:
    for rule in param_rules(arch):
        if rule.megatron == canonical:
            return rule
    raise KeyError(f"no HF mapping for Megatron parameter {canonical!r}")


def merge_tp_shards(rule: ParamRule, shards: Sequence[torch.Tensor]) -> torch.Tensor:
    """TP shards of one live parameter (in TP-rank order) -> the full tensor in the canonical layout."""
    if rule.tp_dim is None or len(shards) == 1:
        return shards[0]
    if rule.kind == "gate_up":  # each rank holds [gate_r ; up_r]
        halves = [torch.chunk(s, 2, dim=0) for s in shards]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves], dim=0)
    return torch.cat(list(shards), dim=rule.tp_dim)
