"""Periodic evaluation during training: the `evaluation` stage on the trainer's rollout engine and reward pool."""

from __future__ import annotations

from prefix_rft_megatron.evaluation.evaluator import evaluate


def evaluate_in_training(trainer) -> dict[str, float]:
    """avg@k / pass@k of each benchmark in `eval.benchmarks`, as flat metrics (`eval/<bench>/<metric>`).

    `eval/average` is the mean avg@k over benchmarks. Runs on rank 0, where the engine lives; the engine holds the
    weights of the last sync, i.e. the current policy.
    """
    cfg = trainer.cfg
    results = evaluate(trainer.engine, trainer.tokenizer, list(cfg.eval.benchmarks), cfg.eval, cfg.data, cfg.reward,
                       scorer=trainer.scorer, stop_token_ids=tuple(cfg.rollout.stop_token_ids))
    flat = {}
    for name, row in results["benchmarks"].items():
        for metric in results["metrics"]:
            flat[f"eval/{name}/{metric}"] = float(row[metric])
    flat["eval/average"] = float(results["average"][f"avg@{cfg.eval.k}"])
    return flat
