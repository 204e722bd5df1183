"""Evaluation configuration (an OmegaConf structured config; the `eval` section once wired into the schema).

Plain types only (no unions, no Optional) so YAML files and `eval.k=4` overrides map onto the fields directly.
Defaults are the reference evaluation settings of prefix-rft.md section 7: temperature 0.6, top-p 0.95, 8192 new
tokens, 32 samples per problem (avg@32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

BUNDLED_BENCHMARKS = ["bundled:math_chain/eval.jsonl"]  # the CPU demo's held-out problems


@dataclass
class EvalConfig:
    # Benchmark files (.jsonl/.json/.parquet, one problem a row, `bundled:` paths allowed); each is one table row,
    # named after the file's stem.
    benchmarks: List[str] = field(default_factory=lambda: list(BUNDLED_BENCHMARKS))
    # Samples drawn per problem (n of the pass@k estimator; avg@k averages over them). Paper: 32.
    k: int = 32
    # pass@k values reported (each must be <= k); pass@1 equals avg@k, reported for the MATH-500-style benchmarks.
    pass_k: List[int] = field(default_factory=lambda: [1, 8, 32])
    # Sampling temperature; 0 is greedy (then all k samples are the same). Paper: 0.6.
    temperature: float = 0.6
    # Nucleus sampling mass; 1.0 disables top-p. Paper: 0.95.
    top_p: float = 0.95
    # Upper bound on generated tokens per sample. Paper: 8192.
    max_new_tokens: int = 8192
    # Evaluate at most this many problems per benchmark, the first ones in file order (0: all).
    max_problems: int = 0
    # Base seed of the sampling draws; problem i of a benchmark uses derive_seed(seed, benchmark index, i).
    seed: int = 1234
    # Field (dotted path) of a benchmark row holding the problem text.
    problem_field: str = "problem"
    # Field (dotted path) of a benchmark row holding the ground-truth answer.
    answer_field: str = "answer"
    # JSON file the results are written to (empty: not written).
    output_path: str = ""
    # Also write every decoded sample, its reward and length into the JSON (large for k=32 x 8192 tokens).
    save_samples: bool = False

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"eval.{msg}")

        check(self.k >= 1, f"k={self.k}: must be >= 1")
        check(all(1 <= p <= self.k for p in self.pass_k),
              f"pass_k={list(self.pass_k)}: each must be in [1, k={self.k}]")
        check(self.temperature >= 0.0, f"temperature={self.temperature}: must be >= 0")
        check(0.0 < self.top_p <= 1.0, f"top_p={self.top_p}: must be in (0, 1]")
        check(self.max_new_tokens >= 1, f"max_new_tokens={self.max_new_tokens}: must be >= 1")
        check(self.max_problems >= 0, f"max_problems={self.max_problems}: must be >= 0 (0: all)")
        check(bool(self.problem_field) and bool(self.answer_field), "problem_field and answer_field must be set")
