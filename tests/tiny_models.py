"""Tiny HF checkpoints for tests, made from configs (no download): the four families x tying variants."""

from pathlib import Path

from prefix_rft_megatron.model.tiny import save_tiny_hf_model

VARIANTS = {
    "llama_untied": dict(family="llama", tie_word_embeddings=False, seed=1),
    "llama_tied": dict(family="llama", tie_word_embeddings=True, seed=2),
    "qwen2_untied": dict(family="qwen2", tie_word_embeddings=False, seed=3),
    "qwen2_tied": dict(family="qwen2", tie_word_embeddings=True, seed=4),
}


def make_variants(root: Path, names=tuple(VARIANTS)) -> dict[str, Path]:
    out = {}
    for name in names:
        path = root / name
        if not (path / "config.json").exists():
            save_tiny_hf_model(path, **VARIANTS[name])
        out[name] = path
    return out
