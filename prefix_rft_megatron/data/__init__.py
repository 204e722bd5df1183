"""Prompts, demonstrations and answers as token ids; the prompt sampler; the bundled arithmetic data."""

from prefix_rft_megatron.data.config import ASSETS_DIR, BUNDLED, DEFAULT_PROMPT_TEMPLATE, DataConfig, resolve_path
from prefix_rft_megatron.data.dataset import Example, LoadReport, PromptDataset, iter_file
from prefix_rft_megatron.data.rows import BadRow
from prefix_rft_megatron.data.sampler import PromptSampler
from prefix_rft_megatron.data.tokenizer import PromptEncoder, load_tokenizer

__all__ = [
    "ASSETS_DIR", "BUNDLED", "DEFAULT_PROMPT_TEMPLATE", "BadRow", "DataConfig", "Example", "LoadReport",
    "PromptDataset", "PromptEncoder", "PromptSampler", "iter_file", "load_tokenizer", "resolve_path",
]
