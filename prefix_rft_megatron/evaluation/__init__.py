"""Evaluation: k samples per benchmark problem on a rollout engine, avg@k and unbiased pass@k, table and JSON.

`EvalConfig` and the metrics import nothing heavy (the config schema imports `evaluation.config`); `evaluate` and the
rest load the engine/reward stack on first use.
"""

from prefix_rft_megatron.evaluation.config import EvalConfig
from prefix_rft_megatron.evaluation.metrics import avg_at_k, mean_pass_at_k, pass_at_k

_LAZY = {
    "Benchmark": "benchmark", "load_benchmark": "benchmark", "evaluate": "evaluator", "summarize": "evaluator",
    "format_table": "report", "write_json": "report",
}

__all__ = ["EvalConfig", "avg_at_k", "mean_pass_at_k", "pass_at_k", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
