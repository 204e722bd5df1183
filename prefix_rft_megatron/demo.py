"""`prefix-rft demo` (`make demo`): Prefix-RFT vs RFT vs SFT from a weak base policy, on a 2-core CPU, ~15 minutes.

The task (bundled `math_chain`, made by `make_chain_data`): `Compute a + b + c.` with a worked solution that chains two
additions (`a + b = s. s + c = r. \\boxed{r}`), plus one-step `Compute a + b.` problems.
1. base policy (cached under --out/base): a random ~0.9M-parameter Qwen2-shaped model with the bundled tokenizer, SFT
   on the `pretrain` split: every one-step problem, but only 24 two-step ones. It solves one-step problems (~100%)
   and few two-step ones (~10%): weak exactly where the demonstrations carry what it lacks.
2. from that base, for every seed: `prefix-rft train conf/cpu_demo.yaml algorithm.name=PREFIX_RFT|RFT|SFT ...`, each
   a subprocess, on the `train` split with the same prompts per step and steps (RL: 8 rollouts per prompt; Prefix-RFT
   replaces 1 of the 8 by a demonstration-prefixed one, so the rollout budget is equal).
3. held-out accuracy (`eval` split, two-step problems disjoint from the other splits) after the last step, overall and
   per kind, as a table, `summary.json` and `curves.png` (train reward and held-out accuracy per algorithm).

    prefix-rft demo [--out outputs/demo] [--seeds 1,2,3] [--jobs 2] [--steps 40] [--quick]
    python -m prefix_rft_megatron.demo --make-data [DIR]     # regenerate prefix_rft_megatron/assets/math_chain

Runs already finished under --out are reused (delete the directory to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent

CHAIN_DIR = PACKAGE / "assets" / "math_chain"
DATA = "bundled:math_chain"
CHAIN_SEED = 2026
# two-step problems: 729 (a, b, c) triples, split into held-out / RL train / the few the base sees
CHAIN_SPLIT = {"eval": 150, "train": 400, "pretrain": 24}
ONE_STEP = {"eval": 50, "train": 100}  # one-step problems in eval/train; pretrain has all 162 of them

# The base policy: model shape and the SFT that makes it strong on one-step problems and weak on two-step ones.
BASE_MODEL = dict(family="qwen2", tie_word_embeddings=True, hidden_size=128, intermediate_size=384,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
BASE_SFT = ["algorithm.name=SFT", f"data.train_files=[{DATA}/pretrain.jsonl]", "train.prompts_per_step=32",
            "train.mini_batch_prompts=32", "train.micro_batch_size=32", "train.lr=3e-3"]
BASE_STEPS = 600
BASE_SEED = 0  # init weights; the SFT itself runs with the config's default seeds

ALGOS = {
    "prefix_rft": ["algorithm.name=PREFIX_RFT", "algorithm.num_prefixed=1"],
    "rft": ["algorithm.name=RFT", "algorithm.num_prefixed=0"],
    "sft": ["algorithm.name=SFT", "train.micro_batch_size=8"],  # 1 sequence per prompt: mini-batch of 8
}


def make_chain_data(out: Path = CHAIN_DIR) -> None:
    """Write pretrain/train/eval.jsonl (deterministic, byte-identical on rerun).

    Two-step problems are split by (a, b, c) triple, so held-out ones were never trained on; one-step problems are
    only 162, all of them in `pretrain` (they are the skill the base brings, not what the demo measures)."""
    from prefix_rft_megatron.data.synthetic_math import sum_problem

    rng = random.Random(CHAIN_SEED)
    one = [sum_problem(a, b) for a in range(1, 19) for b in range(1, 10)]
    two = [sum_problem(a, b, c) for a in range(1, 10) for b in range(1, 10) for c in range(1, 10)]
    rng.shuffle(one)
    rng.shuffle(two)
    splits, start = {}, 0
    for name, n in CHAIN_SPLIT.items():
        splits[name] = two[start:start + n]
        start += n
    splits["eval"] += one[:ONE_STEP["eval"]]
    splits["train"] += one[ONE_STEP["eval"]:ONE_STEP["eval"] + ONE_STEP["train"]]
    splits["pretrain"] += one
    out.mkdir(parents=True, exist_ok=True)
    for name in ("pretrain", "train", "eval"):
        rows = splits[name]
        rng.shuffle(rows)
        with open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for i, p in enumerate(rows):
                f.write(json.dumps({"id": f"{name}-{i:05d}", "kind": p.kind, "problem": p.problem,
                                    "solution": p.solution, "answer": p.answer}, ensure_ascii=False) + "\n")
        print(f"{out / (name + '.jsonl')}: {len(rows)} rows")


def _conf() -> str:
    path = REPO / "conf" / "cpu_demo.yaml"
    if not path.is_file():
        raise SystemExit(f"error: {path} not found (run the demo from a source checkout: pip install -e .)")
    return str(path)


def _seed_overrides(seed: int) -> list[str]:
    return [f"algorithm.seed={seed}", f"rollout.seed={seed}", f"data.seed={seed}", f"parallel.seed={seed}"]


def read_metrics(run_dir: Path) -> list[dict]:
    from prefix_rft_megatron.train.metrics import read_metrics as read_jsonl

    path = run_dir / "metrics.jsonl"
    return read_jsonl(path) if path.is_file() else []


def train(run_dir: Path, overrides: list[str], label: str, threads: int) -> dict:
    """One `prefix-rft train` subprocess (skipped if `run_dir/done.json` records the same settings)."""
    done = run_dir / "done.json"
    key = {"overrides": overrides, "conf": Path(_conf()).read_text()}
    if done.is_file():
        info = json.loads(done.read_text())
        if info.get("overrides") == overrides and info.get("conf") == key["conf"]:
            print(f"  {label}: cached ({run_dir})", flush=True)
            return {"minutes": info["minutes"], "metrics": read_metrics(run_dir), "run_dir": run_dir}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "prefix_rft_megatron.cli", "train", _conf(), *overrides,
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
    metrics = read_metrics(run_dir)
    print(f"  {label}: {minutes:.1f} min, held-out {100 * _final_eval(metrics):.1f}%", flush=True)
    return {"minutes": minutes, "metrics": metrics, "run_dir": run_dir}


def _final_eval(metrics: list[dict]) -> float:
    evals = [m["eval/average"] for m in metrics if m.get("eval/average") is not None]
    return evals[-1] if evals else float("nan")


def _train_reward(metrics: list[dict], last: int = 5) -> float | None:
    """On-policy train reward over the last steps (SFT has no rollouts: None)."""
    vals = [m.get("reward/on_policy") for m in metrics[-last:]]
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def per_kind_accuracy(run_dir: Path) -> dict[str, float]:
    """Held-out accuracy per problem kind (sum2 / sum3) from the run's last evaluation (eval/step_N.json)."""
    results = sorted((run_dir / "eval").glob("step_*.json"))
    if not results:
        return {}
    from prefix_rft_megatron.data.config import resolve_path

    bench = next(iter(json.loads(results[-1].read_text())["benchmarks"].values()))
    with open(resolve_path(bench["file"]), encoding="utf-8") as f:
        kinds = [json.loads(line)["kind"] for line in f if line.strip()][: bench["num_problems"]]
    by_kind: dict[str, list[int]] = {}
    for kind, ok in zip(kinds, bench["correct_per_problem"]):
        by_kind.setdefault(kind, []).append(ok)
    return {k: sum(v) / len(v) for k, v in sorted(by_kind.items())}


def build_base(out: Path, steps: int, extra: list[str], threads: int) -> tuple[Path, dict]:
    import warnings

    warnings.filterwarnings("ignore", message=".*(Transformer Engine|Apex).*not installed.*")
    from prefix_rft_megatron.data.tokenizer import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    init = out / "base" / "init"
    if not (init / "config.json").is_file():
        tok = load_tokenizer("bundled:tokenizer")
        save_tiny_hf_model(init, seed=BASE_SEED, vocab_size=len(tok), **BASE_MODEL)
    run = train(out / "base" / "sft", [f"model.hf_path={init}", *BASE_SFT, f"train.steps={steps}",
                                       f"train.eval_every={steps}", "checkpoint.export_hf_at_end=true", *extra],
                "base (SFT on the pretrain split)", threads)
    return out / "base" / "sft" / "hf", run


def _fmt(vals: list[float]) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def plot(out: Path, runs: dict, base_acc: float) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return None
    colors = {"prefix_rft": "tab:red", "rft": "tab:blue", "sft": "tab:green"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for algo, seeds in runs.items():
        for i, (seed, r) in enumerate(sorted(seeds.items())):
            ms = r["metrics"]
            lab = algo if i == 0 else None
            rs = [(m["step"], m.get("reward/on_policy")) for m in ms if m.get("reward/on_policy") is not None]
            if rs:
                ax1.plot(*zip(*rs), color=colors.get(algo), alpha=0.8, label=lab)
            ev = [(m["step"] + 1, m["eval/average"]) for m in ms if m.get("eval/average") is not None]
            ax2.plot([0] + [s for s, _ in ev], [base_acc] + [v for _, v in ev], marker="o", color=colors.get(algo),
                     alpha=0.8, label=lab)
    ax1.set(title="train reward (on-policy rollouts)", xlabel="step", ylabel="mean reward")
    ax2.axhline(base_acc, color="gray", ls="--", lw=1, label="base")
    ax2.set(title="held-out accuracy (greedy)", xlabel="step", ylabel="avg@1")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = out / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="prefix-rft demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo", help="working directory (finished runs in it are reused)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated RL seeds")
    p.add_argument("--steps", type=int, default=None, help="RL/SFT steps (default: conf/cpu_demo.yaml's train.steps)")
    p.add_argument("--base-steps", type=int, default=BASE_STEPS, help="SFT steps that make the base policy")
    p.add_argument("--algos", default=",".join(ALGOS), help="comma-separated subset of " + ",".join(ALGOS))
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cpus/jobs threads)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 steps, 1 seed, 60 base steps, 40 problems")
    p.add_argument("--make-data", nargs="?", const=str(CHAIN_DIR), default=None, metavar="DIR",
                   help="only (re)write the bundled math_chain split and exit")
    p.add_argument("overrides", nargs="*", help="extra key=value overrides for every run (e.g. train.lr=5e-4)")
    args = p.parse_args(argv)
    if args.make_data:
        make_chain_data(Path(args.make_data))
        return 0

    out = Path(args.out).resolve()
    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    unknown = [a for a in algos if a not in ALGOS]
    if unknown:
        raise SystemExit(f"error: unknown algorithm(s) {unknown}; choose from {list(ALGOS)}")
    extra = list(args.overrides)
    if args.quick:
        seeds, out = seeds[:1], out / "quick"
        args.steps, args.base_steps = args.steps or 4, min(args.base_steps, 60)
        extra += ["eval.max_problems=40"]
    common = list(extra)
    if args.steps:
        # the prefix schedule decays over the whole run, whatever its length
        common += [f"train.steps={args.steps}", f"algorithm.schedule.decay_steps={args.steps}",
                   f"train.eval_every={max(1, args.steps // 4)}"]
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = max(1, args.jobs)
    t_all = time.time()
    print(f"prefix-rft demo -> {out}  (seeds {seeds}, algorithms {algos}, {jobs} runs at a time)", flush=True)
    base_hf, base_run = build_base(out, args.base_steps, extra, threads=cpus)
    base_acc = _final_eval(base_run["metrics"])
    base_kinds = per_kind_accuracy(base_run["run_dir"])
    print(f"base policy: {base_hf}  held-out accuracy {100 * base_acc:.1f}% "
          + " ".join(f"{k} {100 * v:.1f}%" for k, v in base_kinds.items()), flush=True)

    work = [(algo, seed) for seed in seeds for algo in algos]
    threads = max(1, cpus // jobs)

    def run_one(item):
        algo, seed = item
        return item, train(out / "runs" / f"{algo}_seed{seed}",
                           [f"model.hf_path={base_hf}", *ALGOS[algo], *_seed_overrides(seed), *common],
                           f"{algo} seed {seed}", threads)

    runs: dict[str, dict[int, dict]] = {a: {} for a in algos}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for (algo, seed), result in pool.map(run_one, work):
            runs[algo][seed] = result

    rows = [{"algorithm": "base", "seeds": [], "heldout": [base_acc], "per_kind": [base_kinds], "train_reward": None,
             "minutes": base_run["minutes"]}]
    for algo in algos:
        rs = runs[algo]
        tr = [t for t in (_train_reward(r["metrics"]) for r in rs.values()) if t is not None]
        rows.append({"algorithm": algo, "seeds": sorted(rs),
                     "heldout": [_final_eval(rs[s]["metrics"]) for s in sorted(rs)],
                     "per_kind": [per_kind_accuracy(rs[s]["run_dir"]) for s in sorted(rs)],
                     "train_reward": sum(tr) / len(tr) if tr else None,
                     "minutes": statistics.mean(r["minutes"] for r in rs.values())})
    kinds = sorted({k for r in rows for pk in r["per_kind"] for k in pk})
    header = (f"{'algorithm':<11} {'seeds':<7} {'held-out acc %':<14} {'per seed':<18} "
              + " ".join(f"{k + ' %':<12}" for k in kinds) + f" {'train reward':<12} {'min/run':>7}")
    lines = [header, "-" * len(header)]
    for r in rows:
        per = ", ".join(f"{100 * v:.1f}" for v in r["heldout"]) if r["seeds"] else ""
        trw = f"{r['train_reward']:.3f}" if r["train_reward"] is not None else "-"
        by_kind = " ".join(f"{_fmt([pk.get(k, float('nan')) for pk in r['per_kind']]):<12}" for k in kinds)
        lines.append(f"{r['algorithm']:<11} {','.join(map(str, r['seeds'])) or '-':<7} {_fmt(r['heldout']):<14} "
                     f"{per:<18} {by_kind} {trw:<12} {r['minutes']:>7.1f}")
    print("\n" + "\n".join(lines))
    summary = {"base_hf": str(base_hf), "base_heldout": base_acc, "seeds": seeds, "rows": rows,
               "overrides": common, "table": lines}
    if "prefix_rft" in runs and "rft" in runs:
        diffs = [_final_eval(runs["prefix_rft"][s]["metrics"]) - _final_eval(runs["rft"][s]["metrics"])
                 for s in seeds]
        summary["prefix_rft_minus_rft"] = diffs
        print(f"\nPrefix-RFT - RFT, held-out, per seed: {', '.join(f'{100 * d:+.1f}' for d in diffs)} points")
    png = plot(out, runs, base_acc)
    summary["plot"] = str(png) if png else None
    summary["minutes_total"] = (time.time() - t_all) / 60
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"summary: {out / 'summary.json'}" + (f"   plot: {png}" if png else ""))
    print(f"demo finished in {summary['minutes_total']:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
