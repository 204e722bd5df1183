"""The model architecture, read from a Hugging Face `config.json` of the Llama or Qwen2 family.

`ModelArch` holds only what both sides (HF and Megatron) need to agree on. It is the one place that decides what
is supported: anything else in a config fails here with one line naming the file and the field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

SUPPORTED_ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}

# Megatron-Core 0.16 applies Llama 3.x RoPE scaling with only the factor configurable; the frequency bands and the
# original context are fixed (RotaryEmbedding._apply_scaling). A config with other values cannot be expressed.
MEGATRON_LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


class ArchError(ValueError):
    """A user-visible problem with a model config (one line)."""


@dataclass(frozen=True)
class ModelArch:
    family: str  # "llama" | "qwen2"
    vocab_size: int
    hidden_size: int
    ffn_hidden_size: int
    num_layers: int
    num_attention_heads: int
    num_query_groups: int  # HF num_key_value_heads
    head_dim: int  # Megatron kv_channels
    rope_theta: float
    rms_norm_eps: float
    tie_word_embeddings: bool
    qkv_bias: bool  # Qwen2: bias on q/k/v projections only
    max_position_embeddings: int
    llama3_rope_factor: float = 0.0  # > 0 when config has rope_scaling.rope_type == "llama3"

    @property
    def heads_per_group(self) -> int:
        return self.num_attention_heads // self.num_query_groups

    def padded_vocab_size(self, tp: int, divisible_by: int = 128) -> int:
        """Megatron pads the vocabulary so each TP rank holds an equal slice (Megatron-LM's rule)."""
        multiple = divisible_by * tp
        return ((self.vocab_size + multiple - 1) // multiple) * multiple

    def check_parallel(self, tp: int, pp: int, where: str = "model") -> None:
        """Fail with one line when a TP/PP layout cannot split this model."""
        if tp < 1 or pp < 1:
            raise ArchError(f"{where}: tp and pp must be >= 1 (got tp={tp}, pp={pp})")
        if self.num_attention_heads % tp:
            raise ArchError(f"{where}: tp={tp} does not divide num_attention_heads={self.num_attention_heads}")
        if self.num_query_groups % tp:
            raise ArchError(f"{where}: tp={tp} does not divide num_key_value_heads={self.num_query_groups}")
        if self.ffn_hidden_size % tp:
            raise ArchError(f"{where}: tp={tp} does not divide intermediate_size={self.ffn_hidden_size}")
        if self.num_layers % pp:
            raise ArchError(f"{where}: pp={pp} does not divide num_hidden_layers={self.num_layers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelArch":
        return cls(**d)

    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any]) -> "ModelArch":
        """Read an HF config: a directory holding config.json, the file itself, or the parsed dict."""
        if isinstance(source, dict):
            cfg, where = source, "config"
        else:
            path = Path(source)
            if path.is_dir():
                path = path / "config.json"
            where = str(path)
            if not path.is_file():
                raise ArchError(f"{where}: not found (expected a Hugging Face config.json)")
            try:
                cfg = json.loads(path.read_text())
            except json.JSONDecodeError as e:
                raise ArchError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
        archs = cfg.get("architectures") or []
        family = next((SUPPORTED_ARCHITECTURES[a] for a in archs if a in SUPPORTED_ARCHITECTURES), None)
        if family is None:
            model_type = cfg.get("model_type")
            family = model_type if model_type in ("llama", "qwen2") else None
        if family is None:
            raise ArchError(
                f"{where}: unsupported architecture {archs or cfg.get('model_type')!r}; "
                f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
            )

        def need(key: str):
            if key not in cfg:
                raise ArchError(f"{where}: missing field '{key}'")
            return cfg[key]

        if cfg.get("hidden_act", "silu") != "silu":
            raise ArchError(f"{where}: hidden_act={cfg['hidden_act']!r} is not supported (only 'silu', SwiGLU)")
        if cfg.get("mlp_bias") or (family == "llama" and cfg.get("attention_bias")):
            raise ArchError(f"{where}: attention_bias/mlp_bias on a Llama model is not supported")
        heads = need("num_attention_heads")
        hidden = need("hidden_size")
        llama3_factor = _llama3_rope_factor(cfg, where)
        rope_theta = cfg.get("rope_theta")
        if rope_theta is None:  # transformers 5 nests it under rope_parameters
            rope_theta = (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)
        return cls(
            family=family,
            vocab_size=need("vocab_size"),
            hidden_size=hidden,
            ffn_hidden_size=need("intermediate_size"),
            num_layers=need("num_hidden_layers"),
            num_attention_heads=heads,
            num_query_groups=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or hidden // heads,
            rope_theta=float(rope_theta),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),  # both families default to untied
            qkv_bias=family == "qwen2",
            max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
            llama3_rope_factor=llama3_factor,
        )


def _llama3_rope_factor(cfg: dict[str, Any], where: str) -> float:
    """The Llama 3.x RoPE scaling factor (0.0: no scaling), from `rope_scaling` (transformers 4) or
    `rope_parameters` (transformers 5, which also holds rope_theta there). Anything Megatron would silently compute
    differently is refused with one line."""
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    key = "rope_scaling" if cfg.get("rope_scaling") else "rope_parameters"
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return 0.0
    if kind != "llama3":
        raise ArchError(f"{where}: {key}.rope_type={kind!r} is not supported (only 'default' and 'llama3')")
    for name, expected in MEGATRON_LLAMA3_ROPE.items():
        value = scaling.get(name, expected)
        if float(value) != expected:
            raise ArchError(f"{where}: {key}.{name}={value} cannot be expressed in Megatron-Core's Llama 3 RoPE "
                            f"scaling (fixed at {expected})")
    if "factor" not in scaling or float(scaling["factor"]) <= 0:
        raise ArchError(f"{where}: {key}.factor missing or not > 0 for rope_type 'llama3'")
    return float(scaling["factor"])
