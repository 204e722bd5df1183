"""`prefix-rft demo --study`: every arm tuned on the validation split, compared on the held-out split.

1. Learning-rate grid (arms.GRIDS: RL 1e-4 / 3e-4 / 1e-3, SFT 1e-4 / 3e-4 / 1e-3 / 3e-3) on the grid seeds; each
   arm's rate is the one with the best mean validation accuracy at the last step (ties: the smaller rate). sft_rft's
   SFT half runs at the SFT arm's chosen rate, its RFT half is tuned over the RL grid.
2. Every arm at its chosen rate on every seed; the ablations at Prefix-RFT's chosen rate.
3. Held-out table with the chosen rates, paired differences with 95% intervals (Prefix-RFT vs each baseline, each
   ablation vs Prefix-RFT), the grid's validation table, the response-length trend of the ablations; study.json,
   table.md, curves.png (the tuned arms) and ablations.png.
Every run is cached in --out: the study continues where it stopped when run again.
"""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from prefix_rft_megatron.demo.arms import ABLATIONS, ARMS, CHOSEN_LR, GRIDS, STUDY_ARMS
from prefix_rft_megatron.demo.driver import Context
from prefix_rft_megatron.demo.report import arm_row, base_rows, plot, table
from prefix_rft_megatron.demo.runs import float_path
from prefix_rft_megatron.demo.stats import paired_differences
from prefix_rft_megatron.demo.task import HELD_OUT, VALIDATION


def choose_rate(runs: dict, arm: str, lrs, seeds) -> tuple[float, dict[float, float]]:
    """The rate with the best mean validation accuracy over `seeds` (ties: the first, i.e. smallest)."""
    val = {lr: statistics.mean(runs[(arm, s, lr)].accuracy(VALIDATION) for s in seeds) for lr in lrs}
    best = max(lrs, key=lambda lr: (val[lr], -lr))
    return best, val


def length_trend(runs) -> tuple[float | None, float | None]:
    """On-policy response tokens over the first and the last 5 steps, mean over seeds."""
    first, last = [], []
    for r in runs.values():
        vals = [v for _, v in r.series("response/on_policy_length_mean")]
        if vals:
            first.append(statistics.mean(vals[:5]))
            last.append(statistics.mean(vals[-5:]))
    return (statistics.mean(first) if first else None, statistics.mean(last) if last else None)


def run_study(out: Path, seeds: list[int], grid_seeds: list[int], steps: int | None, base_steps: int,
              extra: list[str], jobs: int, algos: list[str] | None, grids: dict | None = None) -> int:
    grids = {**GRIDS, **(grids or {})}
    arms = algos or [*STUDY_ARMS, *ABLATIONS]
    tuned = [a for a in arms if ARMS[a].ablation_of is None]
    ablations = [a for a in arms if ARMS[a].ablation_of is not None]
    path = float_path()
    t0 = time.time()
    print(f"prefix-rft demo --study -> {out}  (seeds {seeds}, grid seeds {grid_seeds}; float path {path})", flush=True)
    ctx = Context(out, [VALIDATION, HELD_OUT], steps, base_steps, extra, jobs)
    print(f"bases: {len(seeds)}", flush=True)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(ctx.base, sorted(set(seeds) | set(grid_seeds))))

    # 1. the grid of every tuned arm but sft_rft (which needs the SFT arm's rate)
    plain = [a for a in tuned if not ARMS[a].sft_first]
    runs = ctx.run_all([(ARMS[a], s, lr) for a in plain for lr in grids[ARMS[a].grid] for s in grid_seeds],
                       "stage 1/3: learning-rate grid")
    chosen, validation = {}, {}
    for a in plain:
        chosen[a], validation[a] = choose_rate(runs, a, grids[ARMS[a].grid], grid_seeds)
    ctx.sft_lr = chosen.get("sft", CHOSEN_LR["sft"])

    # 2. sft_rft's grid, every chosen rate on the other seeds, the ablations
    work = [(ARMS[a], s, lr) for a in tuned if ARMS[a].sft_first for lr in grids[ARMS[a].grid] for s in grid_seeds]
    work += [(ARMS[a], s, chosen[a]) for a in plain for s in seeds if s not in grid_seeds]
    parent_lr = {a: chosen.get(ARMS[a].ablation_of, CHOSEN_LR[ARMS[a].ablation_of]) for a in ablations}
    work += [(ARMS[a], s, parent_lr[a]) for a in ablations for s in seeds]
    runs.update(ctx.run_all(work, "stage 2/3: sft_rft's grid, the chosen rates on every seed, the ablations"))
    for a in tuned:
        if ARMS[a].sft_first:
            chosen[a], validation[a] = choose_rate(runs, a, grids[ARMS[a].grid], grid_seeds)
    # 3. sft_rft at its chosen rate on the other seeds
    runs.update(ctx.run_all([(ARMS[a], s, chosen[a]) for a in tuned if ARMS[a].sft_first for s in seeds
                             if s not in grid_seeds], "stage 3/3: sft_rft on every seed"))
    rates = {**chosen, **parent_lr}
    results = {a: {s: runs[(a, s, rates[a])] for s in seeds} for a in arms}

    base_row, base_acc, base_lines = base_rows(ctx, seeds)
    rows = [base_row] + [arm_row(a, rates[a], results[a], VALIDATION) for a in arms]
    lines = table(rows)
    width = max(len(g) for g in grids.values())
    grid_lines = ["| algorithm | " + " | ".join(f"lr {i + 1}" for i in range(width)) + " | chosen |",
                  "|---|" + "---|" * (width + 1)]
    for a in tuned:
        cells = [f"{lr:.0e}: {100 * v:.1f}" for lr, v in validation[a].items()]
        grid_lines.append(f"| {a} | " + " | ".join(cells + ["-"] * (width - len(cells))) + f" | {chosen[a]:.0e} |")
    pairs = [("prefix_rft", b) for b in tuned if b != "prefix_rft"] + [(a, "prefix_rft") for a in ablations]
    diffs = paired_differences(results, seeds, pairs)
    trends = {a: length_trend(results[a]) for a in ["prefix_rft", *ablations] if a in results}
    trend_lines = [f"{a}: on-policy response tokens {f:.1f} (first 5 steps) -> {l:.1f} (last 5)"
                   for a, (f, l) in trends.items() if f is not None]
    drawn = {a: r["prompts_drawn"] for a, r in zip(arms, rows[1:]) if r["prompts_drawn"] is not None}

    report = ["## Held-out accuracy at each arm's chosen rate", "", *lines, "",
              "## Validation accuracy of the grid (mean over grid seeds " + ",".join(map(str, grid_seeds)) + ")", "",
              *grid_lines, "", "## Paired differences (95% CI)", "", *[f"- {d.line()}" for d in diffs], "",
              "## Response length (ablations)", "", *[f"- {t}" for t in trend_lines], "",
              *(["## Dynamic sampling", ""] + [f"- {a}: {v:.1f} prompts drawn per step (16 train)" for a, v in
                                                drawn.items()] if drawn else []),
              "", f"Float path: {path}. Bases: " + "; ".join(base_lines)]
    print("\n" + "\n".join(report))
    (out / "table.md").write_text("\n".join(report) + "\n")
    tuned_png = plot(out / "curves.png", {a: results[a] for a in tuned}, base_acc,
                     title=f"study: tuned arms at their chosen rates, seeds {seeds}, float path {path}")
    abl_png = plot(out / "ablations.png", {a: results[a] for a in ["prefix_rft", *ablations] if a in results},
                   base_acc, title=f"study: Prefix-RFT ablations, seeds {seeds}, float path {path}")
    study = {"float_path": path, "seeds": seeds, "grid_seeds": grid_seeds, "chosen_lr": chosen,
             "validation_grid": {a: {str(k): v for k, v in val.items()} for a, val in validation.items()},
             "rows": rows, "differences": [d.as_dict() for d in diffs], "length_trend": trends,
             "prompts_drawn": drawn, "table": report, "overrides": extra,
             "plots": [str(p) for p in (tuned_png, abl_png) if p], "minutes_total": (time.time() - t0) / 60}
    (out / "study.json").write_text(json.dumps(study, indent=1, default=str))
    print(f"\nstudy: {out / 'study.json'}, {out / 'table.md'}, plots {study['plots']}")
    print(f"study finished in {study['minutes_total']:.1f} min")
    return 0
