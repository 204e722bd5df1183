"""Checkpoint saves start no long-lived helper process (megatron's Manager), and their writer processes die with the
trainer (checkpoint_io/dist_save.py). A trainer actually SIGKILLed: tests/train/test_resume.py."""

import signal

from distributed import run_torchrun_results


def test_save_starts_no_manager_and_writers_die_with_saver(tmp_path):
    for r in run_torchrun_results("dist_save_processes.py", str(tmp_path), nproc=2, timeout=300):
        assert r["left_running_after_each_save"] == [[], []]  # no Manager (nor anything else) left running
        assert r["megatron_results_queue_restored"]  # megatron's own (lazy Manager queue) is put back
        # every writer process had PR_SET_PDEATHSIG=SIGKILL: it dies with the saver
        assert r["writer_pdeathsigs"] and set(r["writer_pdeathsigs"]) == {signal.SIGKILL}
        assert r["loaded_equal"]
        assert '"sharded_backend": "torch_dist", "sharded_backend_version": 1' in r["metadata"]
