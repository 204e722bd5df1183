"""The demo's task (bundled `math_chain`) and the base policy that starts every run.

Two-step problems `Compute a + b + c.` (a, b, c in 1..9: 729 triples) with a worked solution that chains two
additions (`a + b = s. s + c = r. \\boxed{r}`), plus one-step `Compute a + b.` problems (a in 1..18, b in 1..9).
The triples are split once into held-out (`eval`), `validation` (where the study picks learning rates), RL `train`
and the few the base sees (`pretrain`); one-step problems are all in `pretrain` (the skill the base brings).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]
CHAIN_DIR = PACKAGE / "assets" / "math_chain"
DATA = "bundled:math_chain"
CHAIN_SEED = 2026
CHAIN_SPLIT = {"eval": 300, "validation": 125, "train": 280, "pretrain": 24}  # two-step triples (729 in all)
ONE_STEP = {"eval": 50, "train": 100}  # one-step problems added to eval / train; pretrain has all 162
SPLITS = ("pretrain", "train", "validation", "eval")
HELD_OUT = f"{DATA}/eval.jsonl"
VALIDATION = f"{DATA}/validation.jsonl"

# The base policy: model shape and the SFT that makes it strong on one-step problems and weak on two-step ones.
BASE_MODEL = dict(family="qwen2", tie_word_embeddings=True, hidden_size=128, intermediate_size=384,
                  num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
BASE_SFT = ["algorithm.name=SFT", f"data.train_files=[{DATA}/pretrain.jsonl]", "train.prompts_per_step=32",
            "train.mini_batch_prompts=32", "train.micro_batch_size=32", "train.lr=3e-3"]
BASE_STEPS = 600


def make_chain_data(out: Path = CHAIN_DIR) -> None:
    """Write pretrain/train/validation/eval.jsonl (deterministic, byte-identical on rerun)."""
    from prefix_rft_megatron.data.synthetic_math import sum_problem

    rng = random.Random(CHAIN_SEED)
    one = [sum_problem(a, b) for a in range(1, 19) for b in range(1, 10)]
    two = [sum_problem(a, b, c) for a in range(1, 10) for b in range(1, 10) for c in range(1, 10)]
    rng.shuffle(one)
    rng.shuffle(two)
    splits, start = {}, 0
    for name, n in CHAIN_SPLIT.items():
        splits[name] = two[start:start + n]
        start += n
    assert start <= len(two), start
    splits["eval"] += one[:ONE_STEP["eval"]]
    splits["train"] += one[ONE_STEP["eval"]:ONE_STEP["eval"] + ONE_STEP["train"]]
    splits["pretrain"] += one
    out.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        rows = splits[name]
        rng.shuffle(rows)
        with open(out / f"{name}.jsonl", "w", encoding="utf-8", newline="\n") as f:
            for i, p in enumerate(rows):
                f.write(json.dumps({"id": f"{name}-{i:05d}", "kind": p.kind, "problem": p.problem,
                                    "solution": p.solution, "answer": p.answer}, ensure_ascii=False) + "\n")
        print(f"{out / (name + '.jsonl')}: {len(rows)} rows")
