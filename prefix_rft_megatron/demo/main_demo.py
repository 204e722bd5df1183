"""`make demo`: prefix_rft, rft and sft at the study's chosen rates, seeds 1-3 (each from its own base), the table,
the paired differences with their intervals, and the verdict."""

from __future__ import annotations

import json
import time
from pathlib import Path

from prefix_rft_megatron.demo.arms import ARMS, CHOSEN_LR, DEMO_ARMS
from prefix_rft_megatron.demo.driver import Context
from prefix_rft_megatron.demo.report import arm_row, base_rows, plot, table
from prefix_rft_megatron.demo.runs import float_path
from prefix_rft_megatron.demo.stats import paired_differences
from prefix_rft_megatron.demo.task import HELD_OUT


def run_demo(out: Path, seeds: list[int], steps: int | None, base_steps: int, extra: list[str], jobs: int,
             algos: list[str] | None) -> int:
    algos = algos or list(DEMO_ARMS)
    path = float_path()
    t0 = time.time()
    print(f"prefix-rft demo -> {out}  (seeds {seeds}, {', '.join(algos)}; float path {path}; {jobs} runs at a time)",
          flush=True)
    ctx = Context(out, [HELD_OUT], steps, base_steps, extra, jobs, sft_lr=CHOSEN_LR["sft"])
    work = [(ARMS[a], s, CHOSEN_LR[a]) for s in seeds for a in algos]
    done = ctx.run_all(work, "bases and runs")
    base_row, base_acc, base_lines = base_rows(ctx, seeds)
    print("\n".join(base_lines), flush=True)
    results = {a: {s: done[(a, s, CHOSEN_LR[a])] for s in seeds} for a in algos}
    rows = [base_row] + [arm_row(a, CHOSEN_LR[a], results[a]) for a in algos]
    lines = table(rows)
    diffs = paired_differences(results, seeds, [("prefix_rft", "rft"), ("prefix_rft", "sft")])
    print("\n" + "\n".join(lines) + "\n")
    print(f"float path: {path}   (figures differ between CPUs and float paths; the verdict is about the interval)")
    for d in diffs:
        print("verdict: " + d.line())
    png = plot(out / "curves.png", results, base_acc, title=f"prefix-rft demo, seeds {seeds}, float path {path}")
    summary = {"float_path": path, "seeds": seeds, "rows": rows, "table": lines, "learning_rates": CHOSEN_LR,
               "differences": [d.as_dict() for d in diffs], "overrides": extra, "plot": str(png) if png else None,
               "minutes_total": (time.time() - t0) / 60}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    print(f"summary: {out / 'summary.json'}" + (f"   plot: {png}" if png else ""))
    print(f"demo finished in {summary['minutes_total']:.1f} min")
    return 0
