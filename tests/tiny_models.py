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


def make_tiny_policy(out_dir):
    """A tiny Qwen2 policy over the bundled tokenizer (hidden 64, 2 layers): an HF directory with its tokenizer."""
    from prefix_rft_megatron.data import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    tok = load_tokenizer("bundled:tokenizer")
    path = save_tiny_hf_model(out_dir, family="qwen2", tie_word_embeddings=True, vocab_size=len(tok), hidden_size=64,
                              intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=256, seed=0)
    tok.save_pretrained(path)
    return path
