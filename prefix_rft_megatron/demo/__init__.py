"""`prefix-rft demo` (`make demo`): Prefix-RFT vs RFT vs SFT from weak tiny base policies on a 2-core CPU, ~15 min;
`prefix-rft demo --study`: the full study (tuned baselines, sft_rft, luffy, dynamic sampling, the paper's ablations;
hours, resumable).

The task (demo/task.py, bundled `math_chain`): two-step additions `Compute a + b + c.` held out, one-step ones the
base already solves. For each seed s: base s (a random ~0.9M-parameter Qwen2-shaped model from seed s, SFT'd on the
`pretrain` split: every one-step problem, only 24 two-step ones), then every algorithm from base s with seed s,
40 steps x 16 prompts (RL: 8 rollouts per prompt, Prefix-RFT's 1 prefixed among them). Held-out accuracy (greedy) of
each run; the difference of two algorithms is paired per seed (same base, same problems) and reported with a 95%
interval (demo/stats.py); the verdict line is about that interval. Figures depend on the CPU's float path (printed).

    prefix-rft demo [--out outputs/demo] [--seeds 1,2,3] [--jobs 2] [--steps 40] [--quick] [key=value ...]
    prefix-rft demo --study [--out outputs/study] [--seeds 1,2,3] [--grid-seeds 1]
    python -m prefix_rft_megatron.demo --make-data [DIR]     # regenerate prefix_rft_megatron/assets/math_chain

Runs already finished under --out with the same inputs (resolved config, starting weights, float path, version) are
reused: an interrupted demo or study continues where it stopped when run again.
"""

from __future__ import annotations

from prefix_rft_megatron.demo.task import BASE_MODEL, BASE_STEPS, CHAIN_DIR, make_chain_data  # noqa: F401
from prefix_rft_megatron.demo.runs import build_base  # noqa: F401


def main(argv=None) -> int:
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="prefix-rft demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", action="store_true", help="the full study (hours; resumable): study.json, PNGs")
    p.add_argument("--out", default=None, help="working directory (default outputs/demo, outputs/study)")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (seed s: base s and RL seed s)")
    p.add_argument("--grid-seeds", default="1", help="--study: seeds the learning-rate grid runs on")
    p.add_argument("--rl-grid", default=None, help="--study: rates the RL arms are tuned over (1e-4,3e-4,1e-3)")
    p.add_argument("--sft-grid", default=None, help="--study: learning rates SFT is tuned over (1e-4,3e-4,1e-3,3e-3)")
    p.add_argument("--steps", type=int, default=None, help="RL/SFT steps (default: conf/cpu_demo.yaml's train.steps)")
    p.add_argument("--base-steps", type=int, default=BASE_STEPS, help="SFT steps that make each base policy")
    p.add_argument("--algos", default=None, help="comma-separated subset of the arms to run")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (each gets cpus/jobs threads)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 4 steps, 1 seed, 60 base steps, 40 problems")
    p.add_argument("--make-data", nargs="?", const=str(CHAIN_DIR), default=None, metavar="DIR",
                   help="only (re)write the bundled math_chain split and exit")
    p.add_argument("overrides", nargs="*", help="key=value overrides for every run (e.g. train.lr_warmup_steps=5)")
    args = p.parse_args(argv)
    if args.make_data:
        make_chain_data(Path(args.make_data))
        return 0
    from prefix_rft_megatron.demo.arms import ARMS

    seeds = [int(s) for s in str(args.seeds).split(",") if s.strip()]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()] if args.algos else None
    unknown = [a for a in algos or [] if a not in ARMS]
    if unknown:
        raise SystemExit(f"error: --algos: unknown arm(s) {unknown}; choose from {list(ARMS)}")
    out = Path(args.out or ("outputs/study" if args.study else "outputs/demo")).resolve()
    extra = list(args.overrides)
    if args.quick:
        seeds, out = seeds[:1], out / "quick"
        args.steps, args.base_steps = args.steps or 4, min(args.base_steps, 60)
        extra += ["eval.max_problems=40"]
    if args.study:
        from prefix_rft_megatron.demo.study import run_study

        grid_seeds = [int(s) for s in str(args.grid_seeds).split(",") if s.strip()]
        grids = {k: tuple(float(x) for x in v.split(",") if x.strip()) for k, v in
                 (("rl", args.rl_grid), ("sft", args.sft_grid)) if v}
        return run_study(out, seeds, grid_seeds, args.steps, args.base_steps, extra, args.jobs, algos, grids)
    from prefix_rft_megatron.demo.main_demo import run_demo

    return run_demo(out, seeds, args.steps, args.base_steps, extra, args.jobs, algos)
