import pytest

from prefix_rft_megatron.data import load_tokenizer
from prefix_rft_megatron.model.tiny import save_tiny_hf_model


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """A tiny Qwen2 policy over the bundled tokenizer (hidden 64, 2 layers): an HF directory."""
    tok = load_tokenizer("bundled:tokenizer")
    path = save_tiny_hf_model(tmp_path_factory.mktemp("policy") / "hf", family="qwen2", tie_word_embeddings=True,
                              vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, seed=0)
    tok.save_pretrained(path)
    return path
