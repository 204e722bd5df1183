import pytest

from prefix_rft_megatron.data import load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()
