"""Tiny Llama / Qwen2 models built from a config (no download): for tests, the demo and the converters' checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def tiny_hf_config(
    family: str = "llama",
    tie_word_embeddings: bool = False,
    vocab_size: int = 1000,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    num_hidden_layers: int = 4,
    num_attention_heads: int = 4,
    num_key_value_heads: int = 2,
    max_position_embeddings: int = 512,
    **extra: Any,
) -> dict[str, Any]:
    """An HF config dict; `extra` keys (e.g. `rope_scaling`, `head_dim`) are added as they are."""
    arch = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[family]
    return {
        "architectures": [arch],
        "model_type": family,
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_hidden_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_key_value_heads,
        "max_position_embeddings": max_position_embeddings,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0 if family == "llama" else 1000000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": tie_word_embeddings,
        "torch_dtype": "float32",
        "bos_token_id": 1,
        "eos_token_id": 2,
        **extra,
    }


def build_hf_model(config: dict[str, Any], seed: int = 0):
    """A randomly initialised transformers model for `config` (std 0.02 init, like Megatron's)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    # Norm weights start at 1 in HF; perturb them so a swapped or dropped norm shows up in parity tests.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.add_(0.1 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.normal_(0, 0.02)
    return model.eval()


def save_tiny_hf_model(out_dir: str | Path, seed: int = 0, max_shard_size: str = "200KB", **config_kwargs) -> Path:
    """Write a tiny HF checkpoint directory (config.json + sharded safetensors + index)."""
    out = Path(out_dir)
    model = build_hf_model(tiny_hf_config(**config_kwargs), seed=seed)
    model.save_pretrained(out, max_shard_size=max_shard_size, safe_serialization=True)
    return out
