"""Paired comparison of two algorithms over seeds on the same held-out problems.

Seed s of both algorithms starts from the same base (base s) and is scored on the same problems, so the difference
is taken per seed (paired). Its uncertainty has two parts: how much the difference moves from seed to seed (training
and base noise: sd over seeds / sqrt(n)), and which problems happen to be held out (the standard error of the mean
per-problem difference, seeds averaged). Both are added in quadrature, and the 95% interval uses Student's t with
n - 1 degrees of freedom (with one seed only the problem part is known: normal 1.96). That is conservative: the seed
part already contains some problem noise.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefix_rft_megatron.demo.runs import RunResult

# two-sided 95% quantiles of Student's t, by degrees of freedom (df > 30: the normal's 1.96 within 2%)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 25: 2.060, 30: 2.042}


def t975(df: int) -> float:
    if df <= 0:
        return 1.96
    if df in _T975:
        return _T975[df]
    below = max(k for k in _T975 if k <= df)
    return _T975[below] if df <= 30 else 1.96


@dataclass(frozen=True)
class PairedDifference:
    a: str
    b: str
    per_seed: list[float]  # accuracy(a) - accuracy(b), seed by seed (fractions)
    mean: float
    se_seeds: float
    se_problems: float
    low: float  # 95% interval
    high: float
    num_problems: int

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return f"{self.a} better"
        if self.high < 0:
            return f"{self.b} better"
        return "no clear difference"

    def line(self) -> str:
        seeds = len(self.per_seed)
        return (f"{self.a} - {self.b}: {100 * self.mean:+.1f} points held-out, 95% CI [{100 * self.low:+.1f}, "
                f"{100 * self.high:+.1f}] ({seeds} seed{'s' if seeds > 1 else ''}, paired on the same base; "
                f"{self.num_problems} problems; per seed " + ", ".join(f"{100 * d:+.1f}" for d in self.per_seed)
                + f"): {self.verdict}")

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "per_seed": self.per_seed, "mean": self.mean, "se_seeds": self.se_seeds,
                "se_problems": self.se_problems, "ci95": [self.low, self.high], "verdict": self.verdict,
                "num_problems": self.num_problems}


def paired_difference(a: str, b: str, correct_a: list[list[int]], correct_b: list[list[int]]) -> PairedDifference:
    """`correct_x[s][i]`: 1 if algorithm x's seed-s run solved held-out problem i (greedy), else 0."""
    assert correct_a and len(correct_a) == len(correct_b), (len(correct_a), len(correct_b))
    n_problems = len(correct_a[0])
    assert all(len(c) == n_problems for c in correct_a + correct_b), "every run must be scored on the same problems"
    per_seed = [(sum(ca) - sum(cb)) / n_problems for ca, cb in zip(correct_a, correct_b)]
    seeds = len(per_seed)
    mean = sum(per_seed) / seeds
    se_seeds = statistics.stdev(per_seed) / math.sqrt(seeds) if seeds > 1 else 0.0
    per_problem = [sum(ca[i] - cb[i] for ca, cb in zip(correct_a, correct_b)) / seeds for i in range(n_problems)]
    se_problems = statistics.stdev(per_problem) / math.sqrt(n_problems) if n_problems > 1 else 0.0
    half = t975(seeds - 1) * math.sqrt(se_seeds ** 2 + se_problems ** 2)
    return PairedDifference(a, b, per_seed, mean, se_seeds, se_problems, mean - half, mean + half, n_problems)


def paired_differences(results: dict[str, dict[int, RunResult]], seeds: list[int],
                       pairs: list[tuple[str, str]]) -> list[PairedDifference]:
    """`paired_difference` for each (a, b) of `pairs` whose two arms were both run (`results[arm][seed]`)."""
    return [paired_difference(a, b, [results[a][s].correct() for s in seeds], [results[b][s].correct() for s in seeds])
            for a, b in pairs if a in results and b in results]
