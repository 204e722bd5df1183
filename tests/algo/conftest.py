"""One torchrun launch per world size for all the algo dist checks (tests/dist_scripts/algo_suite.py), shared by
the tests that read their results.
"""

from dataclasses import dataclass
from pathlib import Path

import pytest

import distributed


@dataclass
class AlgoDistRuns:
    out_dir: Path
    two_ranks: str  # combined output of the 2-process launch
    one_rank: str


@pytest.fixture(scope="session")
def algo_dist(tmp_path_factory) -> AlgoDistRuns:
    out_dir = tmp_path_factory.mktemp("algo_dist")
    two = distributed.run_torchrun("algo_suite.py", str(out_dir), nproc=2)
    one = distributed.run_torchrun("algo_suite.py", str(out_dir), nproc=1)
    return AlgoDistRuns(out_dir=out_dir, two_ranks=two, one_rank=one)
