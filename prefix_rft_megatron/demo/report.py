"""The demo's outputs: the table (text and Markdown), the curves (PNG), from the runs' results."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import TYPE_CHECKING

from prefix_rft_megatron.demo.runs import RunResult, per_kind

if TYPE_CHECKING:
    from prefix_rft_megatron.demo.driver import Context

COLORS = {"base": "gray", "prefix_rft": "tab:red", "rft": "tab:blue", "rft_dynamic": "tab:cyan", "luffy": "tab:purple",
          "sft": "tab:green", "sft_rft": "tab:olive", "rho_1.0": "tab:orange", "random_20": "tab:brown",
          "uniform": "tab:pink"}


def fmt_mean_sd(vals: list[float]) -> str:
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def arm_row(name: str, lr: float | None, runs: dict[int, RunResult], validation: str | None = None) -> dict:
    """One table row: held-out accuracy per seed, per kind, train reward, response length, time."""
    seeds = sorted(runs)
    heldout = [runs[s].accuracy() for s in seeds]
    kinds = [per_kind(runs[s].correct()) for s in seeds]
    rewards = [r for r in (runs[s].last_mean("reward/on_policy") for s in seeds) if r is not None]
    lengths = [r for r in (runs[s].last_mean("response/on_policy_length_mean") for s in seeds) if r is not None]
    drawn = [r for r in (runs[s].last_mean("dynamic_sampling/prompts_drawn", last=10**6) for s in seeds)
             if r is not None]
    return {"arm": name, "lr": lr, "seeds": seeds, "heldout": heldout, "per_kind": kinds,
            "validation": [runs[s].accuracy(validation) for s in seeds] if validation else None,
            "train_reward": statistics.mean(rewards) if rewards else None,
            "response_length": statistics.mean(lengths) if lengths else None,
            "prompts_drawn": statistics.mean(drawn) if drawn else None,
            "minutes": statistics.mean(runs[s].minutes for s in seeds)}


def base_rows(ctx: Context, seeds: list[int]) -> tuple[dict, dict[int, float], list[str]]:
    """The bases' table row (the same columns as an arm's), their accuracy per seed, a line per base."""
    row = arm_row("base", None, {s: ctx.base(s)[1] for s in seeds})
    acc = dict(zip(seeds, row["heldout"]))
    lines = [f"base {s}: held-out {100 * acc[s]:.1f}% " + " ".join(f"{k} {100 * v:.1f}%" for k, v in kinds.items())
             for s, kinds in zip(seeds, row["per_kind"])]
    return row, acc, lines


def table(rows: list[dict]) -> list[str]:
    """A Markdown table (also what the terminal shows)."""
    kinds = sorted({k for r in rows for pk in r["per_kind"] for k in pk})
    head = ["algorithm", "lr", "held-out % (mean ± sd)", "per seed"] + [f"{k} %" for k in kinds] + [
        "train reward (last 5)", "response tokens (last 5)", "min/run"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["arm"], f"{r['lr']:.0e}" if r["lr"] else "-", fmt_mean_sd(r["heldout"]),
                 ", ".join(f"{100 * v:.1f}" for v in r["heldout"])]
        cells += [fmt_mean_sd([pk.get(k, float("nan")) for pk in r["per_kind"]]) for k in kinds]
        cells += [f"{r['train_reward']:.3f}" if r["train_reward"] is not None else "-",
                  f"{r['response_length']:.1f}" if r["response_length"] is not None else "-", f"{r['minutes']:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


PANELS = (("held-out accuracy (greedy)", None), ("train reward (on-policy)", "reward/on_policy"),
          ("on-policy response tokens", "response/on_policy_length_mean"),
          ("prefix-token entropy", "entropy/prefix"))


def plot(path: Path, arms: dict[str, dict[int, RunResult]], base_acc: dict[int, float], title: str = "") -> Path | None:
    """Four panels, one line per arm (mean over its seeds at each step): held-out accuracy (step 0: the bases),
    train reward, on-policy response length, prefix-token entropy (sft_rft's RFT half starts at its offset)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot (pip install matplotlib)")
        return None
    fig, axes = plt.subplots(1, 4, figsize=(19, 4.2))
    base = statistics.mean(base_acc.values()) if base_acc else None
    for name, runs in arms.items():
        off = min((r.offset for r in runs.values()), default=0)
        color = COLORS.get(name)
        for ax, (label, key) in zip(axes, PANELS):
            by_step: dict[int, list[float]] = {}
            for r in runs.values():
                if key is None:
                    for step, correct in r.evaluations().items():
                        by_step.setdefault(step + off, []).append(sum(correct) / len(correct))
                else:
                    for step, v in r.series(key):
                        by_step.setdefault(step + off, []).append(v)
            if key is None and base is not None and not off:
                by_step.setdefault(0, []).append(base)
            if by_step and any(v for vs in by_step.values() for v in vs):  # all 0: no such tokens (entropy of sft)
                xs = sorted(by_step)
                ax.plot(xs, [statistics.mean(by_step[x]) for x in xs], color=color, label=name,
                        marker="o" if key is None else None, alpha=0.85)
    for ax, (label, _) in zip(axes, PANELS):
        ax.set(title=label, xlabel="step")
        ax.grid(alpha=0.3)
    if base is not None:
        axes[0].axhline(base, color="gray", ls="--", lw=1, label="bases")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
