"""The demo's training runs: each is one `prefix-rft train` subprocess in its own directory, cached (a run whose
`done.json` records the same inputs, see `run_inputs`, is not run again), and what it measured."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from prefix_rft_megatron.demo.task import BASE_MODEL, BASE_SFT, HELD_OUT

REPO = Path(__file__).resolve().parents[2]


def float_path() -> str:
    """The CPU kernels torch runs here (AVX512 / AVX2 / DEFAULT; ATEN_CPU_CAPABILITY picks a lower one): the demo's
    figures depend on it, so it is printed, recorded and part of every run's cache key."""
    import torch

    return torch.backends.cpu.get_cpu_capability()


def demo_conf() -> str:
    path = REPO / "conf" / "cpu_demo.yaml"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (run the demo from a source checkout: pip install -e .)")
    return str(path)


def resolved_config(overrides: list[str], conf: str | None = None):
    """The config a `prefix-rft train <conf> <overrides>` run trains with (schema defaults, the file, the overrides);
    a bad override is one line naming it, before anything runs."""
    from prefix_rft_megatron.config import ConfigError, load_config

    try:
        return load_config([conf or demo_conf()], overrides)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


def _weights_digest(hf_dir: str) -> str | None:
    """sha256 over the safetensors files of the HF directory a run starts from (None: not a directory yet)."""
    if not hf_dir:
        return None
    path = Path(hf_dir) if Path(hf_dir).is_absolute() else REPO / hf_dir  # runs start in the repository root
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def run_inputs(overrides: list[str], conf: str | None = None) -> dict:
    """What a run's result depends on, its cache key: the resolved config (so a comment in the YAML does not
    invalidate a run, and a changed code default does), the weights it starts from (a rebuilt base invalidates the
    runs made from it), the float path and the package version. Code changed within one version is not seen:
    delete the run's directory (or --out) after such a change."""
    from importlib.metadata import PackageNotFoundError, version

    from prefix_rft_megatron.config import to_yaml

    cfg = resolved_config(overrides, conf)
    try:
        pkg = version("prefix_rft_megatron")
    except PackageNotFoundError:  # a source tree on sys.path without `pip install -e .`
        pkg = "source"
    return {"overrides": list(overrides), "config": to_yaml(cfg), "initial_weights": _weights_digest(cfg.model.hf_path),
            "float_path": float_path(), "version": pkg}


def seed_overrides(seed: int) -> list[str]:
    return [f"algorithm.seed={seed}", f"rollout.seed={seed}", f"data.seed={seed}", f"parallel.seed={seed}"]


def bench_name(path: str) -> str:
    return Path(path).stem  # the evaluator names a benchmark by its file's stem


@dataclass
class RunResult:
    run_dir: Path
    minutes: float
    metrics: list[dict]
    offset: int = 0  # where the run's step 0 is on the arm's time line (sft_rft's RFT half: after the SFT half)

    def correct(self, bench: str = HELD_OUT, step: int | None = None) -> list[int]:
        """Per-problem correct counts on `bench` after `step` completed steps (default: the last evaluation)."""
        evals = self.evaluations(bench)
        if not evals:
            return []
        return evals[max(evals) if step is None else step]

    def evaluations(self, bench: str = HELD_OUT) -> dict[int, list[int]]:
        """{completed steps: per-problem correct counts} of every evaluation of `bench` the run wrote."""
        out = {}
        for path in sorted((self.run_dir / "eval").glob("step_*.json")):
            res = json.loads(path.read_text())
            row = res["benchmarks"].get(bench_name(bench))
            if row is not None:
                out[int(res["step"])] = row["correct_per_problem"]
        return out

    def accuracy(self, bench: str = HELD_OUT, step: int | None = None) -> float:
        c = self.correct(bench, step)
        return sum(c) / len(c) if c else float("nan")

    def series(self, key: str) -> list[tuple[int, float]]:
        return [(m["step"], m[key]) for m in self.metrics if m.get(key) is not None]

    def last_mean(self, key: str, last: int = 5) -> float | None:
        vals = [v for _, v in self.series(key)[-last:]]
        return sum(vals) / len(vals) if vals else None


def read_metrics(run_dir: Path) -> list[dict]:
    from prefix_rft_megatron.train.metrics import read_metrics as read_jsonl

    path = run_dir / "metrics.jsonl"
    return read_jsonl(path) if path.is_file() else []


def train_run(run_dir: Path, overrides: list[str], label: str, threads: int) -> RunResult:
    """Run `prefix-rft train conf/cpu_demo.yaml <overrides>` into run_dir, or reuse it if done with these settings."""
    done = run_dir / "done.json"
    key = run_inputs(overrides)
    if done.is_file():
        info = json.loads(done.read_text())
        if all(info.get(k) == v for k, v in key.items()):
            print(f"  {label}: cached ({run_dir})", flush=True)
            return RunResult(run_dir, info["minutes"], read_metrics(run_dir))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "prefix_rft_megatron.cli", "train", demo_conf(), *overrides,
           f"logging.output_dir={run_dir}", "checkpoint.resume=false",
           "checkpoint.overwrite=true"]  # a run not recorded as finished with these settings starts over
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    print(f"  {label}: running -> {run_dir}/train.log", flush=True)
    t0 = time.time()
    with open(run_dir / "train.log", "w") as log:
        rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO))
    minutes = (time.time() - t0) / 60
    if rc != 0:
        tail = (run_dir / "train.log").read_text().splitlines()[-15:]
        raise SystemExit(f"error: {label} failed (exit {rc}); last lines of {run_dir}/train.log:\n" + "\n".join(tail))
    done.write_text(json.dumps({**key, "minutes": minutes}, indent=1))
    result = RunResult(run_dir, minutes, read_metrics(run_dir))
    print(f"  {label}: {minutes:.1f} min, held-out {100 * result.accuracy():.1f}%", flush=True)
    return result


def base_init(out: Path, seed: int) -> Path:
    """Base `seed`'s random initial weights (HF directory), written once."""
    import warnings

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*not installed.*")
    from prefix_rft_megatron.data.tokenizer import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    init = out / "bases" / f"seed{seed}" / "init"
    if not (init / "config.json").is_file():
        tok = load_tokenizer("bundled:tokenizer")
        save_tiny_hf_model(init, seed=seed, vocab_size=len(tok), **BASE_MODEL)
    return init


def build_base(out: Path, seed: int, steps: int, extra: list[str], threads: int) -> tuple[Path, RunResult]:
    """Base policy `seed`: a random init from `seed`, then SFT on the pretrain split (data order from `seed`)."""
    init = base_init(out, seed)
    root = init.parent
    run = train_run(root / "sft", [f"model.hf_path={init}", *BASE_SFT, *seed_overrides(seed), f"train.steps={steps}",
                                   f"train.eval_every={steps}", "checkpoint.export_hf_at_end=true", *extra],
                    f"base {seed} (SFT on the pretrain split)", threads)
    return root / "sft" / "hf", run


def problem_kinds(bench: str = HELD_OUT, n: int | None = None) -> list[str]:
    from prefix_rft_megatron.data.config import resolve_path

    with open(resolve_path(bench), encoding="utf-8") as f:
        kinds = [json.loads(line)["kind"] for line in f if line.strip()]
    return kinds[:n] if n is not None else kinds


def per_kind(correct: list[int], bench: str = HELD_OUT) -> dict[str, float]:
    """Accuracy per problem kind (sum2 / sum3) of per-problem correct counts (greedy: 0 or 1)."""
    by_kind: dict[str, list[int]] = {}
    for kind, ok in zip(problem_kinds(bench, len(correct)), correct):
        by_kind.setdefault(kind, []).append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}
