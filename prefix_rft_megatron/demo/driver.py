"""Runs an arm at a seed and a learning rate from that seed's base, in a pool of parallel jobs. Every run directory
is taken under its own lock, so two jobs that need the same base (or sft_rft's shared SFT half) run it once."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from prefix_rft_megatron.demo.arms import RFT, SFT, Arm, lr_tag
from prefix_rft_megatron.demo.runs import (RunResult, base_init, build_base, resolved_config, seed_overrides,
                                          train_run)


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@dataclass
class Context:
    out: Path
    benchmarks: list[str]  # evaluated during every run (held-out last: the curves and the table read it)
    steps: int | None  # None: train.steps of conf/cpu_demo.yaml and the overrides
    base_steps: int
    extra: list[str]  # overrides for every run
    jobs: int
    sft_lr: float | None = None  # sft_rft's SFT half
    _locks: dict = field(default_factory=dict)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _bases: dict = field(default_factory=dict)

    @property
    def threads(self) -> int:
        return max(1, cpu_count() // self.jobs)

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def init_base(self, seed: int) -> Path:
        """Base `seed`'s random init, one at a time: it seeds torch's global RNG (two threads drawing at once
        interleave their draws, and the weights are then not seed s's), and transformers' lazy imports are not
        thread-safe either."""
        with self._lock("init"):
            return base_init(self.out, seed)

    def base(self, seed: int) -> tuple[Path, RunResult]:
        self.init_base(seed)
        with self._lock(f"base{seed}"):
            if seed not in self._bases:
                self._bases[seed] = build_base(self.out, seed, self.base_steps, self.extra, self.threads)
            return self._bases[seed]

    def _train(self, run_dir: Path, overrides: list[str], label: str) -> RunResult:
        with self._lock(str(run_dir)):
            return train_run(run_dir, overrides, label, self.threads)

    def _schedule(self, steps: int | None) -> list[str]:
        if steps is None:
            return []
        # the prefix schedule decays over the whole run, whatever its length; 4 evaluations make the curve
        return [f"train.steps={steps}", f"algorithm.schedule.decay_steps={steps}",
                f"train.eval_every={max(1, steps // 4)}"]

    def run_arm(self, arm: Arm, seed: int, lr: float, label: str = "") -> RunResult:
        base_hf, _ = self.base(seed)
        label = label or f"{arm.name} lr {lr:.0e} seed {seed}"
        evals = [f"eval.benchmarks=[{','.join(self.benchmarks)}]", *self.extra]
        run_dir = self.out / "runs" / f"{arm.name}_lr{lr_tag(lr)}_seed{seed}"
        if not arm.sft_first:
            return self._train(run_dir, [f"model.hf_path={base_hf}", *arm.overrides, *seed_overrides(seed),
                                         f"train.lr={lr}", *evals, *self._schedule(self.steps)], label)
        # sft_rft: the same total steps, the first half SFT (shared by every RFT rate), then RFT from its policy
        assert self.sft_lr is not None, "sft_rft needs the SFT arm's rate (Context.sft_lr)"
        total = self.steps or resolved_config(self.extra).train.steps
        half = total // 2
        sft_dir = self.out / "runs" / f"sft_rft_sft{lr_tag(self.sft_lr)}_seed{seed}"
        self._train(sft_dir, [f"model.hf_path={base_hf}", *SFT, *seed_overrides(seed), f"train.lr={self.sft_lr}",
                              *evals, *self._schedule(half), "checkpoint.export_hf_at_end=true"],
                    f"sft_rft's SFT half (lr {self.sft_lr:.0e}, seed {seed})")
        result = self._train(run_dir, [f"model.hf_path={sft_dir / 'hf'}", *(arm.overrides or RFT),
                                       *seed_overrides(seed), f"train.lr={lr}", *evals,
                                       *self._schedule(total - half)], label)
        result.offset = half
        return result

    def run_all(self, work: list[tuple[Arm, int, float]], title: str) -> dict[tuple[str, int, float], RunResult]:
        """Run every (arm, seed, lr), `jobs` at a time, showing progress as runs finish. The bases they need are
        built in the same pool, `jobs` seeds ahead of the runs (so no job waits idle for a base another builds)."""
        if not work:
            return {}
        print(f"{title}: {len(work)} runs, {self.jobs} at a time", flush=True)
        seeds = list(dict.fromkeys(seed for _, seed, _ in work))
        tasks = [("base", s) for s in seeds[:self.jobs]]
        for k, s in enumerate(seeds):
            tasks += [("run", item) for item in work if item[1] == s]
            if k + self.jobs < len(seeds):
                tasks.append(("base", seeds[k + self.jobs]))
        done = [0]
        lock = threading.Lock()

        def one(task):
            kind, what = task
            if kind == "base":
                self.base(what)
                return None
            arm, seed, lr = what
            r = self.run_arm(arm, seed, lr)
            with lock:
                done[0] += 1
                print(f"  [{done[0]}/{len(work)}] {arm.name} lr {lr:.0e} seed {seed} finished", flush=True)
            return (arm.name, seed, lr), r

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            return dict(r for r in pool.map(one, tasks) if r is not None)
