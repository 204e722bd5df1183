"""The HF <-> Megatron layout transforms against per-head / per-rank references written out by hand."""

import pytest
import torch

from prefix_rft_megatron.convert import mapping
from prefix_rft_megatron.model.arch import ModelArch
from prefix_rft_megatron.model.tiny import tiny_hf_config


def arch(**kw):
    return ModelArch.from_hf(tiny_hf_config(**kw))


@pytest.mark.parametrize("heads,kv", [(4, 2), (4, 4), (8, 1)])
def test_qkv_interleave_matches_per_group_reference(heads, kv):
    a = arch(num_attention_heads=heads, num_key_value_heads=kv, hidden_size=64)
    d, h = a.head_dim, a.hidden_size
    q, k, v = torch.randn(heads * d, h), torch.randn(kv * d, h), torch.randn(kv * d, h)
    fused = mapping.qkv_to_megatron(q, k, v, a)
    # Reference: for each query group, its query heads, then its key head, then its value head.
    rows = []
    for g in range(kv):
        for j in range(heads // kv):
            head = g * (heads // kv) + j
            rows.append(q[head * d:(head + 1) * d])
        rows += [k[g * d:(g + 1) * d], v[g * d:(g + 1) * d]]
    assert torch.equal(fused, torch.cat(rows))
    q2, k2, v2 = mapping.qkv_from_megatron(fused, a)
    assert torch.equal(q2, q) and torch.equal(k2, k) and torch.equal(v2, v)


def test_qkv_bias_roundtrip():
    a = arch(family="qwen2")
    qb, kb, vb = torch.randn(64), torch.randn(32), torch.randn(32)
    out = mapping.qkv_from_megatron(mapping.qkv_to_megatron(qb, kb, vb, a), a)
    assert all(torch.equal(x, y) for x, y in zip(out, (qb, kb, vb)))


@pytest.mark.parametrize("tp", [2, 4])
def test_merge_tp_shards_inverts_megatron_partitioning(tp):
    a = arch(num_attention_heads=8, num_key_value_heads=4)
    rules = {r.megatron: r for r in mapping.param_rules(a)}
    # fc1: Megatron's ColumnParallelLinear gives rank r the r-th slice of gate and of up, stacked.
    gate, up = torch.randn(128, 64), torch.randn(128, 64)
    shards = [torch.cat([gate.chunk(tp)[r], up.chunk(tp)[r]]) for r in range(tp)]
    assert torch.equal(mapping.merge_tp_shards(rules["mlp.linear_fc1.weight"], shards), torch.cat([gate, up]))
    # qkv: rank r holds whole query groups, so its slice of the fused tensor is contiguous.
    fused = torch.randn((8 + 2 * 4) * a.head_dim, 64)
    assert torch.equal(mapping.merge_tp_shards(rules["self_attention.linear_qkv.weight"], list(fused.chunk(tp))), fused)
    # row-parallel linear_proj splits the input dim.
    proj = torch.randn(64, 64)
    assert torch.equal(mapping.merge_tp_shards(rules["self_attention.linear_proj.weight"], list(proj.chunk(tp, 1))), proj)


def test_vocab_padding_and_names():
    a = arch(vocab_size=1100)
    assert a.padded_vocab_size(1) == 1152 and a.padded_vocab_size(2) == 1280
    rule = mapping.rule_for("embedding.word_embeddings.weight", a)
    w = torch.randn(1100, 64)
    padded = mapping.to_megatron(rule, [w], a, 1280)
    assert padded.shape == (1280, 64) and torch.equal(padded[1100:], torch.zeros(180, 64))
    assert torch.equal(mapping.to_hf(rule, padded, a, None)[0][1], w)
    assert mapping.canonical_param_name("decoder.layers.1.input_layernorm.weight", layer_offset=2) == (
        "self_attention.linear_qkv.layer_norm_weight", 3)
    tied = arch(tie_word_embeddings=True)
    assert "lm_head.weight" not in mapping.all_hf_names(tied)
    assert "lm_head.weight" in mapping.all_hf_names(a)
