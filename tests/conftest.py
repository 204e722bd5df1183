import logging
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "2")
warnings.filterwarnings("ignore", message=".*Transformer Engine and Apex are not installed.*")
logging.getLogger("megatron").setLevel(logging.WARNING)

import pytest

# The engine tier (a real SGLang server in its own environment) runs under `make test-sglang`, which names that
# environment's interpreter; the unit suite leaves it out.
collect_ignore = [] if os.environ.get("PREFIX_RFT_SGLANG_PYTHON") else ["engine"]


def pytest_configure(config):
    # `make test` leaves these out (-m "not e2e"); `make test-e2e` (CI runs it after `make test`) runs them
    config.addinivalue_line("markers", "e2e: end-to-end runs of whole commands (the demo and study drivers, the "
                                       "fault replays, the benchmark scripts): minutes each, in `make test-e2e`")


@pytest.fixture(scope="session")
def tiny_hf_models(tmp_path_factory):
    """{variant: HF dir} for llama/qwen2 x tied/untied, hidden 64, 4 layers, GQA 4/2 heads, vocab 1000."""
    from tiny_models import make_variants

    return make_variants(tmp_path_factory.mktemp("tiny_hf"))
