import io
import pathlib

import pytest


@pytest.fixture(autouse=True)
def nemorun_home(tmp_path, monkeypatch):
    """NeMo-Run keeps experiments and its local job registry under NEMORUN_HOME: keep them in the test's tmp dir.
    Run from the repository root (conf/ paths), with a readable stdin: NeMo-Run's Slurm packaging runs shell
    commands through invoke, which reads stdin (pytest's capture refuses reads)."""
    monkeypatch.setenv("NEMORUN_HOME", str(tmp_path / "nemo_run_home"))
    monkeypatch.chdir(pathlib.Path(__file__).resolve().parents[2])
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    return tmp_path / "nemo_run_home"
