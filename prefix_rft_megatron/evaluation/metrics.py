"""pass@k and avg@k from per-problem sample counts.

pass@k is the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code"): with n
samples of which c are correct, the probability that a random k-subset holds at least one correct sample,
`1 - C(n-c, k) / C(n, k)`, computed as the product `prod_{i=n-c+1}^{n} (1 - k/i)` (no huge binomials).
avg@k is the mean accuracy over the k samples of a problem, averaged over problems; it equals pass@1.
"""

from __future__ import annotations

from typing import Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c of them correct."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    prob_all_wrong = 1.0
    for i in range(n - c + 1, n + 1):
        prob_all_wrong *= 1.0 - k / i
    return 1.0 - prob_all_wrong


def mean_pass_at_k(correct_counts: Sequence[int], n: int, k: int) -> float:
    """pass@k averaged over problems (each with n samples)."""
    if not correct_counts:
        return float("nan")
    return sum(pass_at_k(n, c, k) for c in correct_counts) / len(correct_counts)


def avg_at_k(correct_counts: Sequence[int], n: int) -> float:
    """Mean over problems of the fraction of the n samples that are correct."""
    if not correct_counts:
        return float("nan")
    if n < 1:
        raise ValueError(f"avg_at_k: n={n} must be >= 1")
    return sum(c / n for c in correct_counts) / len(correct_counts)
