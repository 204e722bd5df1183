"""pass@k and avg@k against a brute-force reference: enumerate every k-subset of n samples."""

import itertools
import math

import pytest

from prefix_rft_megatron.evaluation.metrics import avg_at_k, mean_pass_at_k, pass_at_k


def brute_pass_at_k(n: int, c: int, k: int) -> float:
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_form_and_edges():
    assert pass_at_k(32, 0, 32) == 0.0
    assert pass_at_k(32, 1, 32) == 1.0
    assert pass_at_k(32, 8, 1) == pytest.approx(8 / 32)  # pass@1 is the fraction correct
    # large n: the product form agrees with exact binomials where those are still computable
    assert pass_at_k(200, 7, 50) == pytest.approx(1 - math.comb(193, 50) / math.comb(200, 50), rel=1e-12)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_avg_at_k_is_mean_accuracy_and_equals_pass_at_1():
    counts = [0, 3, 4, 1]
    n = 4
    samples = [[j < c for j in range(n)] for c in counts]
    reference = sum(sum(s) / n for s in samples) / len(samples)
    assert avg_at_k(counts, n) == pytest.approx(reference)
    assert mean_pass_at_k(counts, n, 1) == pytest.approx(reference)
    assert mean_pass_at_k(counts, n, 2) == pytest.approx(
        sum(brute_pass_at_k(n, c, 2) for c in counts) / len(counts))
