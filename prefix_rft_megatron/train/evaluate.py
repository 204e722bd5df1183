"""Periodic evaluation during training: the `evaluation` stage on the trainer's rollout engine and reward pool."""

from __future__ import annotations

from pathlib import Path

from prefix_rft_megatron.evaluation.evaluator import evaluate
from prefix_rft_megatron.evaluation.report import write_json


def results_path(output_dir: str | Path, step: int) -> Path:
    """Where the evaluation after `step` completed steps is written: <output_dir>/eval/step_NNNNNN.json, named like
    the checkpoint (and the HF export) of the same weights."""
    return Path(output_dir) / "eval" / f"step_{step:06d}.json"


def evaluate_in_training(engine, scorer, tokenizer, cfg, step: int | None = None) -> dict[str, float]:
    """avg@k / pass@k of each benchmark in `eval.benchmarks`, as flat metrics (`eval/<bench>/<metric>`).

    `eval/average` is the mean avg@k over benchmarks. Runs on rank 0, where the engine lives; the engine holds the
    weights of the last sync, i.e. the current policy. With `step` (completed steps) the full results, per problem
    (and every sample with `eval.save_samples`), go to `results_path(output_dir, step)` in the layout
    `prefix-rft eval --out` writes, so the two can be compared problem by problem. `cfg` is the run's Config.
    """
    results = evaluate(engine, tokenizer, list(cfg.eval.benchmarks), cfg.eval, cfg.data, cfg.reward,
                       scorer=scorer, stop_token_ids=tuple(cfg.rollout.stop_token_ids))
    if step is not None:
        results["step"] = step
        write_json(results, results_path(cfg.logging.output_dir, step))
    flat = {}
    for name, row in results["benchmarks"].items():
        for metric in results["metrics"]:
            flat[f"eval/{name}/{metric}"] = float(row[metric])
    flat["eval/average"] = float(results["average"][f"avg@{cfg.eval.k}"])
    return flat
