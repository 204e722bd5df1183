"""The trainer's evaluation (rollout engine after the weight sync) and `prefix-rft eval` on the trainer's HF export
see the same model: same prompts as token ids, same greedy completions, same per-problem correctness.

They once did not (6.0 % vs 2.5 % on the CPU demo's base): the export carries a Qwen2 config.json, and next to one
transformers 5's AutoTokenizer replaced the bundled tokenizer by a Qwen2Tokenizer (digits split off their space), so
the CLI fed the model prompts tokenized unlike anything it was trained on.
"""

import json
import os
import subprocess
import sys

import pytest
import torch

from train_runs import train_args
from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader
from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader
from prefix_rft_megatron.data import load_tokenizer
from prefix_rft_megatron.data.config import resolve_path
from prefix_rft_megatron.evaluation.cli import main as eval_main
from prefix_rft_megatron.model.tiny import build_hf_model, tiny_hf_config
from prefix_rft_megatron.train.evaluate import results_path

BENCH = "bundled:math_chain/eval.jsonl"
STEPS = 2
EVAL = {"eval.k": "1", "eval.pass_k": "[1]", "eval.temperature": "0", "eval.max_new_tokens": "12",
        "eval.max_problems": "6", "eval.save_samples": "true"}


@pytest.fixture(scope="module")
def sharp_policy(tmp_path_factory):
    """A tiny Qwen2 policy over the bundled tokenizer (saved beside it, as the demo's base is), weights x8 so that
    greedy completions depend on every prompt token."""
    tok = load_tokenizer("bundled:tokenizer")
    path = tmp_path_factory.mktemp("parity") / "policy"
    model = build_hf_model(tiny_hf_config(family="qwen2", tie_word_embeddings=True, vocab_size=len(tok),
                                          num_hidden_layers=2, max_position_embeddings=256), seed=7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(8)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_trainer_eval_equals_eval_cli_on_the_export(sharp_policy, tmp_path):
    out = tmp_path / "run"
    args = train_args(sharp_policy, out, STEPS, **{
        "algorithm.name": "SFT", "train.micro_batch_size": "2", "data.train_files": "[bundled:math_chain/train.jsonl]",
        "checkpoint.export_hf_at_end": "true", "eval.benchmarks": f"[{BENCH}]", "reward.num_workers": "0", **EVAL})
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "train", *args], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    trained = json.loads(results_path(out, STEPS).read_text())
    assert trained["step"] == STEPS

    # The export holds the trained weights (those of the last checkpoint), bit for bit.
    hf = HFCheckpointReader(out / "hf")
    ckpt = CheckpointReader(out / "checkpoints" / f"step_{STEPS:06d}")
    exported = hf.get("model.embed_tokens.weight")
    trained_emb = ckpt.read("embedding.word_embeddings.weight")  # Megatron's padded vocab: the first rows are real
    assert exported.shape[0] == len(load_tokenizer()) and torch.equal(exported, trained_emb[: exported.shape[0]])

    # ... and the tokenizer the trainer used (data.tokenizer), not the re-saved copy in model.hf_path.
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (out / "hf" / name).read_bytes() == (resolve_path("bundled:tokenizer") / name).read_bytes()
    assert not (out / "hf" / "chat_template.jinja").exists()

    cli_json = tmp_path / "cli.json"
    assert eval_main(["--hf-dir", str(out / "hf"), "--bench", BENCH, "--out", str(cli_json), "reward.num_workers=0",
                      *[f"{k}={v}" for k, v in EVAL.items()]]) == 0
    standalone = json.loads(cli_json.read_text())

    a, b = trained["benchmarks"]["eval"], standalone["benchmarks"]["eval"]
    assert a["num_problems"] == b["num_problems"] == 6
    assert [s["problem"] for s in a["samples"]] == [s["problem"] for s in b["samples"]]
    assert [s["response"] for s in a["samples"]] == [s["response"] for s in b["samples"]]
    assert [s["tokens"] for s in a["samples"]] == [s["tokens"] for s in b["samples"]]
    assert a["correct_per_problem"] == b["correct_per_problem"] and a["avg@1"] == b["avg@1"]
    assert len(set(s["response"] for s in a["samples"])) > 1  # the completions depend on the prompt
