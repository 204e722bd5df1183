"""Reading and writing checkpoint files, below both the model (`model/load.py`) and the converters (`convert/`):
Megatron distributed checkpoints without a model (`dist_ckpt`), the atomic sharded save of a live model
(`dist_save`), HF safetensors directories (`hf_io`), and the names of this project's own files in a Megatron
checkpoint (below). Nothing here imports the model or the converters."""

META_FILE = "prefix_rft.json"  # our own record next to Megatron's files: architecture and vocab padding
HF_SUBDIR = "hf"  # config.json and tokenizer files of the source model, for the way back to HF
