"""The process pool: same scores as in-process, a genuinely hanging answer is cut off and its worker replaced."""

import multiprocessing as mp
import os
import signal
import time

import pytest

from prefix_rft_megatron.reward import RewardConfig, RewardScorer, score_one

# math-verify evaluates this power tower inside C big-integer code: it does not return (measured > 10 minutes),
# and no Python signal handler can interrupt it. Only killing the process stops it.
HANGS = r"The answer is \boxed{9^{9^{9^{9}}}}"

BATCH = [
    (r"\boxed{0.5}", r"\frac{1}{2}"),
    (r"\boxed{(1,3]}", "(1,3]"),
    (r"\boxed{4}", "3"),
    ("the answer is 12", "12"),
    ("", "1"),
    (r"\boxed{\{2,1\}}", r"\{1,2\}"),
    (r"\boxed{5\text{ cm}}", "5"),
    (r"\boxed{-\frac{7}{2}}", "-3.5"),
]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_score_one(response, gold):
    score_one(response, gold, RewardConfig(num_workers=0))


def test_hanging_input_really_hangs_in_process():
    # Guard that the timeout test below exercises a real hang, not a quick answer.
    p = mp.get_context("spawn").Process(target=_run_score_one, args=(HANGS, "1"), daemon=True)
    p.start()
    p.join(timeout=8.0)  # includes ~2 s of interpreter start-up and imports
    still_running = p.is_alive()
    p.kill()
    p.join()
    assert still_running


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_pool_matches_serial(start_method):
    responses, golds = zip(*BATCH)
    serial = RewardScorer(RewardConfig(num_workers=0)).score(responses, golds)
    with RewardScorer(RewardConfig(num_workers=2, start_method=start_method)) as pool:
        assert pool.score(list(responses) * 3, list(golds) * 3) == serial * 3
    assert [r.reward for r in serial] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]


@pytest.fixture
def fail_after_60s():
    """If the pool did not enforce its limit, the test below would hang: make it fail instead."""
    def expire(signum, frame):
        raise TimeoutError("the reward pool did not cut off the hanging answer")

    old = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def test_hang_is_cut_off_logged_and_worker_replaced(caplog, fail_after_60s):
    responses, golds = zip(*BATCH)
    with RewardScorer(RewardConfig(num_workers=2, timeout_s=1.0)) as pool:
        pids = {w.proc.pid for w in pool._workers}
        t0 = time.monotonic()
        results = pool.score([HANGS, *responses, HANGS], ["1", *golds, "1"])
        elapsed = time.monotonic() - t0
        assert [r.timed_out for r in results] == [True] + [False] * len(BATCH) + [True]
        assert results[0].reward == 0.0 and results[0].formatted and "timed out" in results[0].error
        assert [r.reward for r in results[1:-1]] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        assert elapsed < 8.0  # two 1 s timeouts (in parallel workers) plus replacement start-up
        assert pool.stats["timeouts"] == 2 and pool.stats["worker_restarts"] == 2
        # the stuck workers were killed and reaped, replacements are running
        new_pids = {w.proc.pid for w in pool._workers}
        assert len(pool._workers) == 2 and all(w.proc.is_alive() for w in pool._workers)
        killed = pids - new_pids
        assert len(killed) >= 1 and not any(_alive(pid) for pid in killed)
        # the pool keeps working
        assert [r.reward for r in pool.score([r"\boxed{2}"], ["2"])] == [1.0]
    assert sum("timed out after 1s" in m for m in caplog.messages) == 2
    assert all(not w for w in pool._workers)  # closed


def test_a_dead_idle_worker_is_replaced():
    with RewardScorer(RewardConfig(num_workers=2)) as pool:
        pool.score([r"\boxed{1}"] * 4, ["1"] * 4)  # both workers started and idle
        victim = pool._workers[0].proc
        victim.kill()
        victim.join()
        responses, golds = zip(*BATCH)
        assert [r.reward for r in pool.score(responses, golds)] == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
        assert all(w.proc.is_alive() for w in pool._workers) and victim not in [w.proc for w in pool._workers]


def test_close_leaves_no_process():
    pool = RewardScorer(RewardConfig(num_workers=2, max_tasks_per_worker=3))
    procs = [w.proc for w in pool._workers]
    pool.score([r"\boxed{1}"] * 10, ["1"] * 10)  # recycles workers after 3 answers each
    procs += [w.proc for w in pool._workers]
    pool.close()
    assert not any(p.is_alive() for p in procs)


def test_length_mismatch():
    with pytest.raises(ValueError, match="2 responses but 1 answers"):
        RewardScorer(RewardConfig(num_workers=0)).score(["a", "b"], ["1"])


def test_benchmark_reports_both_rates():
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "benchmarks/bench_reward.py", "--n", "60"], cwd=repo, check=True,
                         capture_output=True, text=True, timeout=120).stdout
    lines = [line for line in out.splitlines() if "answers/s" in line]
    assert len(lines) == 2 and lines[0].startswith("single-process loop") and lines[1].startswith("pool, 2 workers")
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines)


def test_a_worker_killed_mid_answer_scores_zero_and_is_replaced(fail_after_60s):
    import threading

    with RewardScorer(RewardConfig(num_workers=1, timeout_s=50.0)) as pool:
        pool.score([r"\boxed{1}"], ["1"])  # started
        victim = pool._workers[0].proc
        threading.Timer(1.0, victim.kill).start()  # as the OOM killer would, while it is stuck on HANGS
        t0 = time.monotonic()
        results = pool.score([HANGS, r"\boxed{2}"], ["1", "2"])
        assert time.monotonic() - t0 < 20.0  # not the 50 s limit
        assert (results[0].reward, results[0].timed_out, results[0].error) == (0.0, False, "worker died (exit code -9)")
        assert results[1].reward == 1.0
        assert not victim.is_alive() and pool._workers[0].proc is not victim


_OWNER = r"""
import sys, time
busy, start_method, spoof = sys.argv[1] == "busy", sys.argv[2], sys.argv[3] == "spoof"
if spoof:  # not Linux, as far as the workers (forked from here) can tell: they fall back to the watchdog thread
    sys.platform = "darwin"
from prefix_rft_megatron.reward import RewardConfig, RewardScorer
pool = RewardScorer(RewardConfig(num_workers=2, start_method=start_method))
pool.score([r"\boxed{1}"] * 4, ["1"] * 4)  # both workers started
if busy:  # one worker inside C big-integer code, where no Python-level check can run
    pool._workers[0].conn.send((0, sys.argv[4], "1"))
pids = [w.proc.pid for w in pool._workers]
if start_method == "forkserver":
    from multiprocessing import forkserver
    pids.append(forkserver._forkserver._forkserver_pid)
print(" ".join(map(str, pids)), flush=True)
time.sleep(600)
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for whatever reaps orphans here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("start_method,busy,spoof", [("forkserver", True, False), ("spawn", True, False),
                                                     ("fork", False, True)],
                         ids=["forkserver-busy-pdeathsig", "spawn-busy-pdeathsig", "fork-idle-watchdog"])
def test_workers_die_when_the_owner_is_sigkilled(start_method, busy, spoof):
    """A SIGKILLed owner (the trainer) takes its workers, and the forkserver they fork from, with it: within a few
    seconds, even a worker stuck in C code. Without `parent_death` they ran on as orphans."""
    import subprocess
    import sys

    owner = subprocess.Popen([sys.executable, "-c", _OWNER, "busy" if busy else "idle", start_method,
                              "spoof" if spoof else "-", HANGS], stdout=subprocess.PIPE, text=True)
    pids = []
    try:
        pids = [int(p) for p in owner.stdout.readline().split()]
        assert len(pids) == (3 if start_method == "forkserver" else 2) and all(_running(p) for p in pids)
        time.sleep(1.0)  # the busy worker is deep in the power tower by now
        assert all(_running(p) for p in pids)
        owner.kill()  # SIGKILL: no atexit, no finalizers, no close()
        owner.wait()
        t0 = time.monotonic()
        while any(_running(p) for p in pids) and time.monotonic() - t0 < 10.0:
            time.sleep(0.05)
        left = [p for p in pids if _running(p)]
        assert not left, f"workers {left} outlived their owner by {time.monotonic() - t0:.1f}s"
        assert time.monotonic() - t0 < 5.0
    finally:
        owner.kill()
        for p in pids:  # only the processes this test started
            if _running(p):
                os.kill(p, signal.SIGKILL)


def test_a_pathological_gold_answer_costs_at_most_two_time_limits_per_batch():
    """A gold answer that math-verify cannot compare in time (a power tower: the parse is fast, the comparison
    evaluates it) times out twice, then the rest of its rollouts score 0 at once; other problems are unaffected.
    (Huge, unbalanced or deeply nested gold answers are refused at load time: tests/data.)"""
    import time

    from prefix_rft_megatron.reward.config import RewardConfig
    from prefix_rft_megatron.reward.pool import RewardScorer

    tower = "9^{9^{9^{9^{9}}}}"
    with RewardScorer(RewardConfig(num_workers=2, timeout_s=1.0, start_method="fork")) as scorer:
        scorer.score(["\\boxed{2}"], ["2"])  # workers started
        t0 = time.monotonic()
        results = scorer.score(["\\boxed{1}"] * 8 + ["\\boxed{2}"], [tower] * 8 + ["2"])
        elapsed = time.monotonic() - t0
    assert [r.correct for r in results] == [False] * 8 + [True]
    assert all(r.timed_out for r in results[:8])
    assert sum("timed out before" in (r.error or "") for r in results[:8]) >= 6  # not verified: no time spent
    assert elapsed < 3.0, elapsed  # two 1 s limits (on two workers) and worker restarts, not eight limits
