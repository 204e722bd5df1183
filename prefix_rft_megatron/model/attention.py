"""A core-attention spec entry that runs anywhere torch runs.

Megatron's local `DotProductAttention` allocates CUDA buffers; this module does the same math through
`torch.nn.functional.scaled_dot_product_attention`, which has CPU kernels (and flash/efficient kernels on GPU).
It is one more entry in the layer spec (`core_attention=`), not a fork of the model.

Packed sequences (THD, `packed_seq_params.qkv_format == "thd"`): Megatron hands the core [t, heads, head_dim] for
the whole pack; each segment of `cu_seqlens_q` attends causally within itself only, one SDPA call per segment (the
variable-length path: no [t, t] mask, no FLOPs across segments).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.transformer_config import TransformerConfig


class SDPACoreAttention(MegatronModule):
    """Causal self-attention core on Megatron's [s, b, heads, head_dim] layout, with grouped-query heads."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str,
        attention_dropout: float | None = None,
        softmax_scale: float | None = None,
        cp_comm_type: str | None = None,
        pg_collection=None,
    ):
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPACoreAttention does not support context parallelism; use the TE spec")
        self.attn_mask_type = attn_mask_type
        self.dropout_p = config.attention_dropout if attention_dropout is None else attention_dropout
        self.softmax_scale = softmax_scale or 1.0 / math.sqrt(config.kv_channels)

    def forward(self, query, key, value, attention_mask, attn_mask_type=None, attention_bias=None,
                packed_seq_params=None):
        assert attention_bias is None, "SDPACoreAttention: attention_bias is not supported"
        if packed_seq_params is not None:
            return self._packed(query, key, value, packed_seq_params)
        sq, b, nq, d = query.shape
        nkv = key.shape[2]
        # [s, b, h, d] -> [b, h, s, d]; GQA: each KV head serves nq / nkv query heads, in order.
        q = query.permute(1, 2, 0, 3)
        k = key.permute(1, 2, 0, 3).repeat_interleave(nq // nkv, dim=1)
        v = value.permute(1, 2, 0, 3).repeat_interleave(nq // nkv, dim=1)
        mask_type = attn_mask_type or self.attn_mask_type
        if attention_mask is None:
            causal, mask = mask_type == AttnMaskType.causal, None
        else:
            # Megatron's masks are True where attention is NOT allowed; SDPA's boolean masks are the opposite.
            causal, mask = False, ~attention_mask
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=causal,
            dropout_p=self.dropout_p if self.training else 0.0, scale=self.softmax_scale,
        )
        return out.permute(2, 0, 1, 3).reshape(sq, b, nq * d)

    def _packed(self, query, key, value, params):
        if params.qkv_format != "thd" or (params.cu_seqlens_kv is not None
                                          and not torch.equal(params.cu_seqlens_q, params.cu_seqlens_kv)):
            raise ValueError("SDPACoreAttention: packed sequences need qkv_format=thd and the same q/kv segments")
        t, nq, d = query.shape
        nkv = key.shape[1]
        bounds = params.cu_seqlens_q.tolist()
        parts = []
        for start, end in zip(bounds[:-1], bounds[1:]):
            if end == start:
                continue
            # [n, h, d] -> [1, h, n, d]
            q = query[start:end].permute(1, 0, 2).unsqueeze(0)
            k = key[start:end].permute(1, 0, 2).repeat_interleave(nq // nkv, dim=0).unsqueeze(0)
            v = value[start:end].permute(1, 0, 2).repeat_interleave(nq // nkv, dim=0).unsqueeze(0)
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.softmax_scale,
                                               dropout_p=self.dropout_p if self.training else 0.0)
            parts.append(o.squeeze(0).permute(1, 0, 2))
        if bounds[-1] != t:
            raise ValueError(f"SDPACoreAttention: cu_seqlens end at {bounds[-1]}, the pack has {t} positions")
        return torch.cat(parts).reshape(t, nq * d)
