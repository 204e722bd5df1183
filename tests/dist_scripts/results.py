"""What a dist script measured, for the pytest test that launched it (tests/distributed.py: run_torchrun_results)."""

import json
import os
from pathlib import Path


def report(result: dict) -> None:
    """Write this rank's result (JSON-serialisable); called once per rank."""
    out = Path(os.environ["DIST_RESULTS_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(out)
