"""Scoring rollouts with math-verify in a pool of worker processes, with a hard time limit per answer.

math-verify (sympy underneath) can run for minutes or forever on pathological LaTeX, e.g. `\\boxed{9^{9^{9^{9}}}}`
evaluates a power tower inside C big-integer code where no signal handler gets to run. So the limit is enforced from
outside: each worker holds one answer at a time, the parent waits on the workers' pipes with the nearest deadline as
its timeout, and a worker past its deadline is SIGKILLed, joined (no zombie, no leaked process) and replaced. The
answer scores 0 and is logged; the rest of the batch goes on in the other workers.

Workers die with their parent, and so does the forkserver they fork from: a trainer that is SIGKILLed (or
OOM-killed) runs no clean-up, and a worker stuck in such C code would otherwise spin on as an orphan
(`parent_death`, `forkserver_preload`).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from typing import Sequence

from prefix_rft_megatron.reward.answer import _quiet_math_verify, last_boxed, score_answer
from prefix_rft_megatron.reward.config import RewardConfig
from prefix_rft_megatron.process.parent_death import die_with_parent

logger = logging.getLogger(__name__)

_READY = "ready"
_STARTUP_TIMEOUT_S = 120.0  # a fresh worker imports sympy and warms math-verify up; not counted against any answer


@dataclass(frozen=True)
class RewardResult:
    reward: float
    """`float(correct) + format_score * formatted`."""
    correct: bool
    formatted: bool
    timed_out: bool = False
    error: str | None = None
    """Why the answer could not be verified (an exception in math-verify, a worker that died), else None."""


def _result(cfg: RewardConfig, correct: bool, formatted: bool, **kw) -> RewardResult:
    return RewardResult(float(correct) + cfg.format_score * formatted, correct, formatted, **kw)


def score_one(response: str, answer: str, cfg: RewardConfig) -> RewardResult:
    """Score one response in this process, with no time limit (what a worker runs; also the serial path)."""
    try:
        correct, formatted = score_answer(response, answer, cfg)
        return _result(cfg, correct, formatted)
    except Exception as e:  # noqa: BLE001 - any failure inside math-verify scores 0, it must not stop training
        return _result(cfg, False, bool(last_boxed(response)), error=f"{type(e).__name__}: {e}"[:300])


def _drop_forkserver_liveness_fd() -> None:
    """A child of the forkserver holds a copy of the pipe whose EOF tells the forkserver that its owner is gone;
    a worker never starts processes itself, so it gives the copy up (the forkserver can then end with the owner)."""
    try:
        from multiprocessing import forkserver

        fd = getattr(forkserver._forkserver, "_forkserver_alive_fd", None)
        if fd is not None:
            forkserver._forkserver._forkserver_alive_fd = None
            os.close(fd)
    except (ImportError, AttributeError, OSError):
        pass


def _worker_main(conn, cfg: RewardConfig, owner: int | None = None) -> None:
    die_with_parent(owner)
    # Ctrl-C reaches the whole process group: the trainer stops (and this worker with it), the worker does not
    # print a KeyboardInterrupt traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if cfg.start_method == "forkserver":
        _drop_forkserver_liveness_fd()
    _quiet_math_verify()
    score_one("\\boxed{\\frac{1}{2}}", "0.5", cfg)  # warm-up: lazy imports and grammar building happen here
    conn.send(_READY)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        task_id, response, answer = task
        conn.send((task_id, score_one(response, answer, cfg)))


class _Worker:
    def __init__(self, ctx, cfg: RewardConfig) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, cfg, os.getpid()), daemon=True,
                                name="reward-worker")
        self.proc.start()
        child.close()
        self.started = time.monotonic()
        self.ready = False
        self.task: int | None = None
        self.deadline = 0.0
        self.done = 0

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass
        self.proc.join(timeout=2.0)
        self.kill()


class RewardScorer:
    """Scores (response, answer) pairs. Use as a context manager, or call `close()`.

    >>> with RewardScorer(RewardConfig(num_workers=2, timeout_s=5)) as scorer:
    ...     results = scorer.score(responses, answers)
    """

    def __init__(self, cfg: RewardConfig) -> None:
        self.cfg = cfg
        self.stats = collections.Counter()  # answers, correct, timeouts, errors, worker_restarts
        self._workers: list[_Worker] = []
        self._startup_failures = 0
        # A pathological gold answer would make each of its rollouts pay the whole time limit (one step > 200 s):
        # every gold is probed once (parsed alone, under the limit) before its first rollouts, and a gold that fails
        # the probe, or that two answers of one batch time out against, scores the rest of its rollouts 0 at once.
        self._probed_golds: set[str] = set()
        self._slow_golds: set[str] = set()
        if cfg.num_workers == 0:
            return
        self._ctx = mp.get_context(cfg.start_method)
        if cfg.start_method == "forkserver":
            # Workers fork from a server that has math-verify imported: a replacement starts in milliseconds. The
            # server dies with this process (forkserver_preload), the workers with the server.
            self._ctx.set_forkserver_preload(["prefix_rft_megatron.reward.forkserver_preload", "math_verify",
                                              "prefix_rft_megatron.reward.pool"])
        self._workers = [_Worker(self._ctx, cfg) for _ in range(cfg.num_workers)]

    # -- public ---------------------------------------------------------------------------------------------------
    def score(self, responses: Sequence[str], answers: Sequence[str]) -> list[RewardResult]:
        """One result per response, in order. Never raises for a bad answer and never waits longer than about
        `timeout_s` per answer and worker."""
        if len(responses) != len(answers):
            raise ValueError(f"reward: {len(responses)} responses but {len(answers)} answers")
        if self.cfg.num_workers == 0:
            results = [score_one(r, a, self.cfg) for r, a in zip(responses, answers)]
        else:
            try:
                self._probe_golds(answers)
                results = self._score_pool(responses, answers)
            except BaseException:  # e.g. KeyboardInterrupt: a worker busy with this batch must not answer the next
                for i, w in enumerate(list(self._workers)):
                    if w.task is not None:
                        self._replace(i)
                raise
        for r in results:
            self.stats["answers"] += 1
            self.stats["correct"] += r.correct
            self.stats["timeouts"] += r.timed_out
            self.stats["errors"] += r.error is not None and not r.timed_out
        return results

    def close(self) -> None:
        for w in self._workers:
            w.stop()
        self._workers = []

    def __enter__(self) -> "RewardScorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def _probe_golds(self, answers: Sequence[str]) -> None:
        new = [a for a in dict.fromkeys(answers) if a not in self._probed_golds]
        if not new:
            return
        for gold, r in zip(new, self._score_pool([""] * len(new), new)):  # an empty response: the gold's parse alone
            self._probed_golds.add(gold)
            if r.timed_out:
                self._slow_golds.add(gold)
                logger.warning("reward: gold answer %r cannot be parsed within %.3gs; its rollouts score 0",
                               gold[:200], self.cfg.timeout_s)

    # -- pool -----------------------------------------------------------------------------------------------------
    def _replace(self, i: int, graceful: bool = False) -> None:
        old = self._workers[i]
        old.stop() if graceful else old.kill()
        self._workers[i] = _Worker(self._ctx, self.cfg)
        self.stats["worker_restarts"] += not graceful

    def _score_pool(self, responses: Sequence[str], answers: Sequence[str]) -> list[RewardResult]:
        cfg = self.cfg
        results: list[RewardResult | None] = [None] * len(responses)
        pending = collections.deque(range(len(responses)))
        remaining = len(responses)

        timeouts: collections.Counter = collections.Counter()  # per gold answer, in this call

        def skip_slow_golds() -> None:
            nonlocal remaining
            for task in [t for t in pending if answers[t] in self._slow_golds or timeouts[answers[t]] >= 2]:
                pending.remove(task)
                results[task] = _result(cfg, False, bool(last_boxed(responses[task])), timed_out=True,
                                        error="its gold answer timed out before (alone, or twice in this batch); "
                                              "not verified")
                remaining -= 1

        skip_slow_golds()
        while remaining:
            now = time.monotonic()
            for i, w in enumerate(list(self._workers)):
                if w.ready and w.task is None and pending:
                    task = pending.popleft()
                    try:
                        w.conn.send((task, responses[task], answers[task]))
                    except OSError:  # died while idle: replace it, the answer waits for the next free worker
                        logger.warning("reward: idle worker died (exit code %s); replaced", w.proc.exitcode)
                        pending.appendleft(task)
                        self._replace(i)
                        continue
                    w.task = task
                    w.deadline = time.monotonic() + cfg.timeout_s
            deadlines = [w.started + _STARTUP_TIMEOUT_S if not w.ready else w.deadline
                         for w in self._workers if not w.ready or w.task is not None]
            if not remaining:
                break
            assert deadlines, "answers remain but no worker is busy or starting"
            ready_conns = wait_any([w.conn for w in self._workers], timeout=max(0.0, min(deadlines) - now))
            for i, w in enumerate(list(self._workers)):
                if w.conn not in ready_conns:
                    continue
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):  # the worker died (segfault, OOM killer)
                    w.proc.join(timeout=1.0)
                    if not w.ready:
                        self._startup_failures += 1
                        if self._startup_failures >= 3:  # not a fluke: an import error, a broken environment
                            raise RuntimeError(
                                f"reward: workers exit during start-up (exit code {w.proc.exitcode})") from None
                    if w.task is not None:
                        logger.warning("reward: worker died (exit code %s) on answer %d; scored 0",
                                       w.proc.exitcode, w.task)
                        results[w.task] = _result(cfg, False, False, error=f"worker died (exit code {w.proc.exitcode})")
                        remaining -= 1
                    else:
                        logger.warning("reward: %s worker died (exit code %s); replaced",
                                       "idle" if w.ready else "starting", w.proc.exitcode)
                    self._replace(i)
                    continue
                if msg == _READY:
                    w.ready = True
                    self._startup_failures = 0
                    continue
                task_id, res = msg
                assert task_id == w.task
                results[task_id] = res
                remaining -= 1
                w.task = None
                w.done += 1
                if cfg.max_tasks_per_worker and w.done >= cfg.max_tasks_per_worker:
                    self._replace(i, graceful=True)
            now = time.monotonic()
            for i, w in enumerate(list(self._workers)):
                if w.task is not None and now > w.deadline:
                    boxed = last_boxed(responses[w.task])
                    shown = boxed if boxed is not None else responses[w.task][-200:]
                    logger.warning("reward: answer %d timed out after %.3gs, scored 0 (worker replaced): %r vs gold %r",
                                   w.task, cfg.timeout_s, shown[:200], answers[w.task][:200])
                    results[w.task] = _result(cfg, False, boxed is not None and boxed != "", timed_out=True,
                                              error=f"timed out after {cfg.timeout_s}s")
                    remaining -= 1
                    timeouts[answers[w.task]] += 1
                    self._replace(i)
                    skip_slow_golds()  # a gold two answers timed out against costs no more time in this batch
                elif not w.ready and now > w.started + _STARTUP_TIMEOUT_S:
                    raise RuntimeError(f"reward: a worker did not start within {_STARTUP_TIMEOUT_S}s")
        return results  # type: ignore[return-value]
