"""Checkpoint saves start no long-lived helper process (megatron's Manager), and their writer processes die with the
trainer (model/dist_save.py). A trainer actually SIGKILLed: tests/train/test_resume.py."""

from distributed import run_torchrun


def test_save_starts_no_manager_and_writers_die_with_saver(tmp_path):
    out = run_torchrun("dist_save_processes.py", str(tmp_path), nproc=2, timeout=300)
    assert "OK writers=" in out, out[-3000:]
