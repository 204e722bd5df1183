"""Loading the tokenizer and turning problems and demonstrations into token ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from prefix_rft_megatron.data.config import BUNDLED, DataConfig, resolve_path

# tokenizer_config.json classes that mean "exactly the pipeline in tokenizer.json" (transformers 4 / 5 names).
GENERIC_TOKENIZER_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


def declares_generic_tokenizer(path: str | Path) -> bool:
    """Whether the directory holds a tokenizer.json whose tokenizer_config.json names a generic class."""
    path = Path(path)
    try:
        cls = json.loads((path / "tokenizer_config.json").read_text()).get("tokenizer_class")
    except (OSError, ValueError):
        return False
    return cls in GENERIC_TOKENIZER_CLASSES and (path / "tokenizer.json").is_file()


def load_tokenizer(path: str = BUNDLED + "tokenizer"):
    """A fast tokenizer from a local directory (or the local Hugging Face cache); never downloads.

    The same files give the same tokenizer whether or not a model's config.json sits beside them (an HF checkpoint
    directory, e.g. the trainer's export): for some model types (qwen2, phi3, ...) transformers 5's AutoTokenizer
    overrides a tokenizer_config.json that names the generic class with the model type's class, and Qwen2Tokenizer
    rebuilds its own pre-tokenizer over tokenizer.json's vocabulary. The bundled tokenizer then splits digits off
    their space (" 4" -> "Ġ", "4" instead of "Ġ4"): prompts unlike the training ones, and `prefix-rft eval` on an
    export scored a policy 2.5 % that the trainer's evaluation of the same weights scored 6.0 %. A generic class
    is therefore loaded as declared; any other goes through AutoTokenizer."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    resolved = resolve_path(path)
    try:
        if declares_generic_tokenizer(resolved):
            return PreTrainedTokenizerFast.from_pretrained(str(resolved), local_files_only=True)
        return AutoTokenizer.from_pretrained(str(resolved), local_files_only=True)
    except OSError as e:
        raise FileNotFoundError(f"data.tokenizer: cannot load {path!r} locally ({e.__class__.__name__}); "
                                f"give a directory with tokenizer.json + tokenizer_config.json") from None


class PromptEncoder:
    """prompt text -> prompt ids (template or chat template applied); demonstration text -> ids ending with eos."""

    def __init__(self, cfg: DataConfig, tokenizer) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        eos = cfg.eos_token if cfg.eos_token is not None else tokenizer.eos_token
        eos_id = tokenizer.convert_tokens_to_ids(eos) if eos is not None else None
        if eos_id is None or eos_id == tokenizer.unk_token_id:
            raise ValueError(f"data.eos_token: the tokenizer has no token {eos!r}")
        self.eos_id: int = eos_id
        if cfg.use_chat_template and not getattr(tokenizer, "chat_template", None):
            raise ValueError("data.use_chat_template: the tokenizer has no chat template")

    def prompt_text(self, problem: str) -> str:
        """The prompt as the model sees it, special tokens written out."""
        user = self.cfg.prompt_template.replace("{problem}", problem)
        if not self.cfg.use_chat_template:
            return user
        messages = ([{"role": "system", "content": self.cfg.system_prompt}] if self.cfg.system_prompt else [])
        messages.append({"role": "user", "content": user})
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode_prompts(self, problems: Sequence[str]) -> list[list[int]]:
        texts = [self.prompt_text(p) for p in problems]
        # Raw template: the tokenizer's own special tokens (bos for Llama-like ones, none for Qwen). A chat template
        # already wrote its special tokens into the text.
        return self.tokenizer(texts, add_special_tokens=not self.cfg.use_chat_template)["input_ids"]

    def encode_demos(self, demos: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(demos), add_special_tokens=False)["input_ids"]
        return [x + [self.eos_id] for x in ids]
