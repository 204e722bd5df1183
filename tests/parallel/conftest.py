import pytest

from tiny_models import make_tiny_policy


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """A tiny Qwen2 policy over the bundled tokenizer (hidden 64, 2 layers): an HF directory."""
    return make_tiny_policy(tmp_path_factory.mktemp("policy") / "hf")
