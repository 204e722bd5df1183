"""`prefix-rft eval` on a tiny random Qwen2 checkpoint with the bundled tokenizer and a bundled benchmark file."""

import json

import pytest
import torch

from prefix_rft_megatron.data import DataConfig, load_tokenizer
from prefix_rft_megatron.data.tokenizer import PromptEncoder
from prefix_rft_megatron.evaluation import load_benchmark
from prefix_rft_megatron.evaluation.cli import main
from prefix_rft_megatron.model.tiny import build_hf_model, tiny_hf_config
from prefix_rft_megatron.rollout import GenerateRequest, SamplingParams
from prefix_rft_megatron.rollout.hf_engine import HFEngine

BENCH = "bundled:math_chain/eval.jsonl"


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    tok = load_tokenizer()
    d = tmp_path_factory.mktemp("eval_tiny") / "hf"
    model = build_hf_model(tiny_hf_config(family="qwen2", tie_word_embeddings=True, vocab_size=len(tok)), seed=5)
    with torch.no_grad():  # std 0.16 instead of 0.02: sharp, input-dependent logits, so greedy text shows the weights
        for name, p in model.named_parameters():
            if not name.endswith("norm.weight"):
                p.mul_(8)
    model.save_pretrained(d, max_shard_size="100KB")  # several shards: the reader follows the index
    tok.save_pretrained(d)
    return d


def test_cli_writes_json_and_table(hf_dir, tmp_path, capsys):
    out = tmp_path / "res" / "eval.json"
    rc = main(["--hf-dir", str(hf_dir), "--bench", BENCH, "--out", str(out), "eval.k=3", "eval.pass_k=[1,3]",
               "eval.max_new_tokens=12", "eval.max_problems=5", "reward.num_workers=1"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "eval" in printed and "avg@3" in printed and "pass@3" in printed and "temperature=0.6" in printed
    res = json.loads(out.read_text())
    row = res["benchmarks"]["eval"]
    assert row["num_problems"] == 5 and row["k"] == 3 and len(row["correct_per_problem"]) == 5
    assert 0.0 <= row["avg@3"] <= row["pass@3"] <= 1.0
    assert 1 <= row["mean_response_tokens"] <= 12
    assert res["settings"]["top_p"] == 0.95 and res["checkpoint"] == str(hf_dir)


def test_cli_greedy_outputs_are_the_checkpoints(hf_dir, tmp_path):
    """The CLI loads the weights through update_weights; its greedy samples must equal those of the checkpoint
    loaded by transformers' from_pretrained, and differ from those of an engine left at random init."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "greedy.json"
    assert main(["--hf-dir", str(hf_dir), "--bench", BENCH, "--out", str(out), "eval.k=1", "eval.pass_k=[1]",
                 "eval.temperature=0", "eval.max_new_tokens=10", "eval.max_problems=4", "eval.save_samples=true",
                 "reward.num_workers=0"]) == 0
    got = [s["response"] for s in json.loads(out.read_text())["benchmarks"]["eval"]["samples"]]

    tok = load_tokenizer(str(hf_dir))
    prompts = PromptEncoder(DataConfig(), tok).encode_prompts(list(load_benchmark(BENCH, max_problems=4).problems))
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=10, seed=0)

    def greedy(engine):
        comps = engine.generate([GenerateRequest(p, params) for p in prompts])
        return [tok.decode(c[0].token_ids, skip_special_tokens=True) for c in comps]

    reference = HFEngine(AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32))
    assert got == greedy(reference)
    torch.manual_seed(123)
    unloaded = HFEngine.from_config(str(hf_dir))
    assert got != greedy(unloaded)


def test_cli_reports_bad_input_in_one_line(hf_dir, tmp_path, capsys):
    assert main(["--hf-dir", str(tmp_path / "nope")]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert main(["--hf-dir", str(hf_dir), "eval.k=0"]) == 2
    assert "eval.k=0" in capsys.readouterr().err
    assert main(["--hf-dir", str(hf_dir), "--bench", str(tmp_path / "missing.jsonl"), "reward.num_workers=0"]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
