from prefix_rft_megatron.model.arch import ArchError, ModelArch
from prefix_rft_megatron.model.builder import build_gpt_model, choose_layer_spec, fused_backends, transformer_config, unwrap_model

__all__ = ["ArchError", "ModelArch", "build_gpt_model", "choose_layer_spec", "fused_backends", "transformer_config", "unwrap_model"]
