"""Run a test body in N real processes with torchrun and the gloo backend.

The body is a script under tests/dist_scripts/. It measures and reports what each rank saw
(`dist_scripts/results.py: report`); `run_torchrun_results` hands those records to the pytest test, which asserts
them with its tolerances in view. A script that fails outright (non-zero exit) makes the launcher raise with the
combined output of the ranks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent / "dist_scripts"
REPO = Path(__file__).resolve().parents[1]


def run_torchrun(script: str, *args: str, nproc: int = 2, timeout: int = 600, env_extra: dict | None = None) -> str:
    env = dict(os.environ, **(env_extra or {}))
    env["PYTHONPATH"] = f"{REPO}{os.pathsep}{env.get('PYTHONPATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
        "--standalone", "--tee", "3",  # standalone: rendezvous on a free loopback port
        str(SCRIPTS / script), *args,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"torchrun {script} {' '.join(args)} failed (rc={proc.returncode}):\n{out[-6000:]}")
    return out


def run_torchrun_results(script: str, *args: str, nproc: int = 2, timeout: int = 600,
                         env_extra: dict | None = None) -> list[dict]:
    """Run `script` like `run_torchrun`; return what each rank reported, in rank order."""
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as results:
        log = run_torchrun(script, *args, nproc=nproc, timeout=timeout,
                           env_extra={**(env_extra or {}), "DIST_RESULTS_DIR": results})
        out = []
        for rank in range(nproc):
            path = Path(results) / f"rank{rank}.json"
            assert path.is_file(), f"rank {rank} of {script} reported nothing:\n{log[-3000:]}"
            out.append(json.loads(path.read_text()))
        return out
