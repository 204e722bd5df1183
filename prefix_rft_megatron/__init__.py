"""Prefix-RFT (arXiv 2507.01679) on Megatron-Core with SGLang rollouts. Start with docs/ (README.md)."""

import warnings as _warnings

# megatron-core 0.16 warns at import about every optional fused stack it does not find (six warnings), and the
# libraries below it about internals a user cannot act on. `model.builder` logs one line instead, saying which fused
# paths are active (Transformer Engine, apex, fused Adam, flash attention).
for _message in (
    "Transformer Engine and Apex are not installed",
    "Apex is not installed",
    "full scope is deprecated",  # megatron's own default of cuda_graph_scope
    "The .grad attribute of a Tensor that is not a leaf Tensor",  # megatron's optimizer probing main_grad
    "`torch.distributed.reduce_scatter_tensor` is deprecated",  # megatron's sequence-parallel collectives
    "`torch.distributed.all_gather_into_tensor` is deprecated",
    "`past_key_values` is deprecated",  # transformers 5 renaming what the HF engine passes
):
    _warnings.filterwarnings("ignore", message=f".*{_message}.*")
