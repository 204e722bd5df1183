"""`evaluate`: k samples per benchmark problem on any rollout engine, scored with the training reward.

Engine-agnostic (the trainer calls it between steps with its own engine; `evaluation.cli` with one it builds):
prompts are built by the data stage's `PromptEncoder` (the training template), token ids go to
`engine.generate`, the sampled ids are decoded only for the reward (math-verify in the reward pool).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Dict, List, Optional, Sequence

from prefix_rft_megatron.data.config import DataConfig
from prefix_rft_megatron.data.tokenizer import PromptEncoder
from prefix_rft_megatron.evaluation.benchmark import Benchmark, load_benchmark
from prefix_rft_megatron.evaluation.config import EvalConfig
from prefix_rft_megatron.evaluation.metrics import avg_at_k, mean_pass_at_k
from prefix_rft_megatron.reward.config import RewardConfig
from prefix_rft_megatron.reward.pool import RewardScorer
from prefix_rft_megatron.rollout.engine import RolloutEngine
from prefix_rft_megatron.rollout.types import GenerateRequest, SamplingParams, derive_seed

logger = logging.getLogger(__name__)


def evaluate(
    engine: RolloutEngine,
    tokenizer,
    benchmarks: Sequence[str | Benchmark],
    eval_cfg: EvalConfig,
    data_cfg: DataConfig,
    reward_cfg: RewardConfig,
    scorer: Optional[RewardScorer] = None,
    stop_token_ids: Sequence[int] = (),
) -> Dict[str, Any]:
    """Results of every benchmark (file paths or loaded `Benchmark`s), see `summarize` for the layout.

    `scorer`: a running reward pool to reuse (the trainer's); otherwise one is started and closed here.
    `stop_token_ids`: extra ids that end a sample besides the model's EOS (e.g. rollout.stop_token_ids)."""
    encoder = PromptEncoder(data_cfg, tokenizer)
    loaded = [b if isinstance(b, Benchmark) else
              load_benchmark(b, eval_cfg.problem_field, eval_cfg.answer_field, eval_cfg.max_problems)
              for b in benchmarks]
    own_scorer = scorer is None
    scorer = scorer if scorer is not None else RewardScorer(reward_cfg)
    out: Dict[str, Any] = {}
    try:
        for bi, bench in enumerate(loaded):
            out[bench.name] = _evaluate_one(engine, tokenizer, encoder, bench, bi, eval_cfg, scorer, stop_token_ids)
    finally:
        if own_scorer:
            scorer.close()
    return summarize(out, eval_cfg)


def _evaluate_one(engine, tokenizer, encoder: PromptEncoder, bench: Benchmark, bench_index: int, cfg: EvalConfig,
                  scorer: RewardScorer, stop_token_ids: Sequence[int]) -> Dict[str, Any]:
    t0 = time.monotonic()
    prompts = bench.problems[: cfg.max_problems] if cfg.max_problems else bench.problems
    answers = bench.answers[: len(prompts)]
    prompt_ids = encoder.encode_prompts(list(prompts))
    requests = [
        GenerateRequest(ids, SamplingParams(
            n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens,
            stop_token_ids=tuple(stop_token_ids), seed=derive_seed(cfg.seed, bench_index, i)))
        for i, ids in enumerate(prompt_ids)
    ]  # fmt: skip
    completions = engine.generate(requests)
    assert len(completions) == len(requests)
    texts: List[str] = []
    flat_answers: List[str] = []
    lengths: List[int] = []
    truncated = 0
    for comps, answer in zip(completions, answers):
        assert len(comps) == cfg.k, (len(comps), cfg.k)
        for c in comps:
            texts.append(tokenizer.decode(c.token_ids, skip_special_tokens=True))
            flat_answers.append(answer)
            lengths.append(len(c.token_ids))
            truncated += c.finish_reason == "length"
    t_gen = time.monotonic() - t0
    results = scorer.score(texts, flat_answers)
    correct = [sum(r.correct for r in results[i * cfg.k:(i + 1) * cfg.k]) for i in range(len(prompts))]
    row: Dict[str, Any] = {
        "file": bench.path,
        "num_problems": len(prompts),
        "k": cfg.k,
        f"avg@{cfg.k}": avg_at_k(correct, cfg.k),
        **{f"pass@{p}": mean_pass_at_k(correct, cfg.k, p) for p in sorted(set(cfg.pass_k))},
        "mean_response_tokens": sum(lengths) / len(lengths),
        "truncated_fraction": truncated / len(lengths),
        "correct_per_problem": correct,
        "generate_s": round(t_gen, 3),
        "score_s": round(time.monotonic() - t0 - t_gen, 3),
    }
    if cfg.save_samples:
        row["samples"] = [
            {"problem": prompts[i // cfg.k], "answer": flat_answers[i], "response": texts[i],
             "tokens": lengths[i], "correct": results[i].correct}
            for i in range(len(texts))
        ]  # fmt: skip
    logger.info("eval %s: avg@%d %.4f over %d problems (%.1fs)", bench.name, cfg.k, row[f"avg@{cfg.k}"],
                len(prompts), time.monotonic() - t0)
    return row


def summarize(per_benchmark: Dict[str, Dict[str, Any]], cfg: EvalConfig) -> Dict[str, Any]:
    """{"settings": sampling settings, "benchmarks": {name: row}, "average": unweighted mean over benchmarks of the
    metrics (the paper's "six-benchmark average" is such a mean)}."""
    metric_keys = [f"avg@{cfg.k}"] + [f"pass@{p}" for p in sorted(set(cfg.pass_k))] + ["mean_response_tokens"]
    rows = list(per_benchmark.values())
    average = {key: sum(r[key] for r in rows) / len(rows) for key in metric_keys} if rows else {}
    settings = {"k": cfg.k, "pass_k": sorted(set(cfg.pass_k)), "temperature": cfg.temperature, "top_p": cfg.top_p,
                "max_new_tokens": cfg.max_new_tokens, "max_problems": cfg.max_problems, "seed": cfg.seed}
    return {"settings": settings, "benchmarks": per_benchmark, "average": average, "metrics": metric_keys}
