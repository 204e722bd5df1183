"""Run a test body in N real processes with torchrun and the gloo backend.

The body is a script under tests/dist_scripts/; it raises (non-zero exit) when a check fails. The launcher returns
the combined output so the pytest failure shows what the ranks printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPTS = Path(__file__).parent / "dist_scripts"
REPO = Path(__file__).resolve().parents[1]


def run_torchrun(script: str, *args: str, nproc: int = 2, timeout: int = 600) -> str:
    env = dict(os.environ)
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
