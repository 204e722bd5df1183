"""Build the Megatron-Core GPTModel for a Llama/Qwen2 architecture.

The layer spec is chosen at run time: Transformer Engine when it imports and CUDA is present, otherwise Megatron's
local spec with `SDPACoreAttention` (runs on CPU). The choice and the fused paths in use are logged once.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from megatron.core import parallel_state
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
from megatron.core.transformer.transformer_config import TransformerConfig

from prefix_rft_megatron.model.arch import ModelArch
from prefix_rft_megatron.model.attention import SDPACoreAttention
from prefix_rft_megatron.model.norm import RMSNorm

logger = logging.getLogger(__name__)
_LOGGED: set[str] = set()


def _log_once(msg: str) -> None:
    if msg not in _LOGGED:
        _LOGGED.add(msg)
        logger.info(msg)


def fused_backends() -> dict[str, bool]:
    """Which optional fused stacks are importable here (for logs and for spec choice)."""
    found = {}
    for name in ("transformer_engine", "apex"):
        try:
            __import__(name)
            found[name] = True
        except Exception:  # a broken install counts as absent
            found[name] = False
    found["cuda"] = torch.cuda.is_available()
    return found


def fused_paths_line(use_te: bool) -> str:
    """The one line that says which fused paths this process uses (megatron's own import warnings are silenced)."""
    from prefix_rft_megatron.train.optim import _ADAM_NAMES, adam_implementation

    b = fused_backends()
    if use_te:
        layers = "Transformer Engine layers (fused linear+norm, fused attention)"
    else:
        layers = "local layer spec (torch RMSNorm, torch SDPA attention)"
    if b["cuda"]:
        flash = "yes" if torch.backends.cuda.flash_sdp_enabled() else "no"
    else:
        flash = "no (CPU: SDPA's CPU kernels)"
    adam = adam_implementation()
    return (f"fused paths: {layers}; Transformer Engine {'yes' if b['transformer_engine'] else 'no'}, apex "
            f"{'yes' if b['apex'] else 'no'}, fused Adam {'no' if adam == 'torch' else 'yes'} ({_ADAM_NAMES[adam]}), "
            f"flash attention {flash}, CUDA {'yes' if b['cuda'] else 'no'}")


def choose_layer_spec(config: TransformerConfig, use_te: bool | None = None):
    """Transformer Engine spec if asked for or (by default) available with CUDA; else the local spec with torch SDPA
    attention and an RMSNorm that supports sequence parallelism (`model.norm`), as a block spec for this stage."""
    backends = fused_backends()
    te_ok = backends["transformer_engine"] and backends["cuda"]
    if use_te and not te_ok:
        raise RuntimeError("model.transformer_impl=transformer_engine but Transformer Engine with CUDA is not available")
    if use_te is None:
        use_te = te_ok
    if use_te:
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        _log_once(fused_paths_line(use_te=True))
        return get_gpt_layer_with_transformer_engine_spec()
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec.submodules.self_attention.submodules.core_attention = SDPACoreAttention
    spec.submodules.input_layernorm = RMSNorm
    spec.submodules.pre_mlp_layernorm = RMSNorm
    _log_once(fused_paths_line(use_te=False))
    # the final norm comes from the block spec (a bare layer spec would get megatron's own, which refuses SP)
    return TransformerBlockSubmodules(layer_specs=[spec] * get_num_layers_to_build(config), layer_norm=RMSNorm)


def transformer_config(arch: ModelArch, params_dtype: torch.dtype = torch.float32, **overrides) -> TransformerConfig:
    tp = parallel_state.get_tensor_model_parallel_world_size()
    pp = parallel_state.get_pipeline_model_parallel_world_size()
    arch.check_parallel(tp, pp)
    kwargs = dict(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.ffn_hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.rms_norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=arch.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        apply_rope_fusion=False,
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        params_dtype=params_dtype,
        bf16=params_dtype == torch.bfloat16,
        fp16=params_dtype == torch.float16,
        pipeline_dtype=params_dtype,
        use_cpu_initialization=not torch.cuda.is_available(),
        init_method_std=0.02,
        # Logits and the loss are computed by our own vocab-parallel code in fp32.
        cross_entropy_loss_fusion=False,
        # Sequence parallelism (activations outside attention/MLP split over TP along the sequence) needs TP > 1.
        sequence_parallel=False,
    )
    kwargs.update(overrides)
    kwargs["sequence_parallel"] = bool(kwargs["sequence_parallel"]) and tp > 1
    return TransformerConfig(**kwargs)


def build_gpt_model(
    arch: ModelArch,
    params_dtype: torch.dtype = torch.float32,
    use_te: bool | None = None,
    make_vocab_size_divisible_by: int = 128,
    **config_overrides,
) -> GPTModel:
    """The GPTModel for this process's pipeline stage (pre/post-process flags from parallel_state)."""
    config = transformer_config(arch, params_dtype, **config_overrides)
    tp = parallel_state.get_tensor_model_parallel_world_size()
    model = GPTModel(
        config=config,
        transformer_layer_spec=choose_layer_spec(config, use_te),
        vocab_size=arch.padded_vocab_size(tp, make_vocab_size_divisible_by),
        max_sequence_length=arch.max_position_embeddings,
        pre_process=parallel_state.is_pipeline_first_stage(),
        post_process=parallel_state.is_pipeline_last_stage(),
        parallel_output=True,
        share_embeddings_and_output_weights=arch.tie_word_embeddings,
        position_embedding_type="rope",
        rotary_base=int(arch.rope_theta),
        rope_scaling=arch.llama3_rope_factor > 0,
        rope_scaling_factor=arch.llama3_rope_factor or 8.0,
    )
    if torch.cuda.is_available():
        model.cuda(torch.cuda.current_device())
    return model


def unwrap_model(model):
    """The GPTModel inside wrappers such as Megatron's DDP (its parameter and sharded keys are the canonical ones)."""
    while hasattr(model, "module"):
        model = model.module
    return model
