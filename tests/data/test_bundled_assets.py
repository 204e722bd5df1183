"""The shipped tokenizer and generated dataset: loadable offline, round-trip, regenerable byte for byte, and every
worked solution verifies against its answer."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from prefix_rft_megatron.data import ASSETS_DIR, DataConfig, PromptDataset
from prefix_rft_megatron.data.synthetic_math import MIX, generate
from prefix_rft_megatron.reward import RewardConfig, score_one

REPO = Path(__file__).resolve().parents[2]
MATH = ASSETS_DIR / "math"
SPLITS = ["train.jsonl", "eval.jsonl", "pretrain.jsonl"]
BENCH = ["bench/arith_id.jsonl", "bench/arith_ood.jsonl", "bench/fractions.jsonl"]
EVAL = "bundled:math/eval.jsonl"


def rows(name):
    with open(MATH / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_tokenizer_loads_offline_with_its_special_tokens():
    tok = AutoTokenizer.from_pretrained(str(ASSETS_DIR / "tokenizer"), local_files_only=True)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert 512 <= len(tok) <= 2048
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [3, 4]
    assert tok("1 + 1").input_ids[0] == 1  # bos prepended, like Llama
    direct = PreTrainedTokenizerFast.from_pretrained(str(ASSETS_DIR / "tokenizer"), local_files_only=True)
    assert direct("What is 47 + 38?").input_ids == tok("What is 47 + 38?").input_ids
    # digits are single tokens, so numbers are spelled digit by digit
    assert all(not any(c.isdigit() for c in t.replace("Ġ", "")[1:]) for t in tok.get_vocab())


def test_tokenizer_round_trips_all_dataset_text(tokenizer):
    texts = []
    for name in SPLITS:
        texts += [t for r in rows(name) for t in (r["problem"], r["solution"], r["answer"])]
    for name in BENCH:
        texts += [t for r in rows(name) for t in (r["problem"], r["answer"])]
    texts += ["Ünïcode ∫ x² dx = \\frac{x^3}{3} + C 😀\t\r\n  two  spaces", "  lead and trail  ", ""]
    ids = tokenizer(texts, add_special_tokens=False).input_ids
    assert [tokenizer.decode(x) for x in ids] == texts
    assert len(texts) > 13000


def test_dataset_token_ids_decode_to_template_and_solution(tokenizer):
    ds = PromptDataset.from_files([EVAL], DataConfig(), tokenizer)
    raw = rows("eval.jsonl")
    assert [e.id for e in ds] == [r["id"] for r in raw] and [e.answer for e in ds] == [r["answer"] for r in raw]
    for e, r in zip(ds, raw):
        assert tokenizer.decode(e.prompt_ids) == "<s>" + r["problem"] + (
            "\nPlease reason step by step, and put your final answer within \\boxed{}")
        assert e.demo_ids[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in e.demo_ids[:-1]
        assert tokenizer.decode(e.demo_ids[:-1]) == r["solution"]
        assert 15 <= len(e.demo_ids) <= 60 and len(e.prompt_ids) <= 64


def test_chat_template_option(tokenizer):
    cfg = DataConfig(use_chat_template=True, system_prompt="Be brief.", eos_token="<|im_end|>")
    ds = PromptDataset.from_files([EVAL], cfg, tokenizer)
    text = tokenizer.decode(ds[0].prompt_ids)
    problem = rows("eval.jsonl")[0]["problem"]
    assert text.startswith("<s><|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n" + problem)
    assert text.endswith("\\boxed{}<|im_end|>\n<|im_start|>assistant\n")
    assert ds[0].prompt_ids.count(tokenizer.bos_token_id) == 1  # the template's bos, not a second one
    assert ds[0].demo_ids[-1] == 4
    with pytest.raises(ValueError, match="no token '<nope>'"):
        PromptDataset.from_files([EVAL], DataConfig(eos_token="<nope>"), tokenizer)


def test_splits_are_disjoint_and_solutions_verify():
    problems = {name: [r["problem"] for r in rows(name)] for name in SPLITS + BENCH}
    assert {k: len(v) for k, v in problems.items()} == {
        "train.jsonl": 2000, "eval.jsonl": 300, "pretrain.jsonl": 2000, "bench/arith_id.jsonl": 100,
        "bench/arith_ood.jsonl": 100, "bench/fractions.jsonl": 50}
    seen = set()
    for name in SPLITS + BENCH[:2]:
        assert not seen & set(problems[name]), name
        seen |= set(problems[name])
        assert len(set(problems[name])) == len(problems[name])
    assert all(set(r) == {"problem", "answer"} for name in BENCH for r in rows(name))
    cfg = RewardConfig(num_workers=0)
    sample = rows("eval.jsonl") + rows("train.jsonl")[::10]
    assert all(score_one(r["solution"], r["answer"], cfg).correct for r in sample)
    # and a wrong answer does not verify: the check above can fail
    assert not any(score_one(r["solution"], str(int(r["answer"]) + 1), cfg).correct for r in sample[:50])


def test_generator_is_deterministic_and_follows_the_mix():
    a, b = generate(2000, seed=5), generate(2000, seed=5)
    assert a == b and a != generate(2000, seed=6)
    counts = {k: sum(p.kind == k for p in a) / len(a) for k in MIX}
    assert all(abs(counts[k] - MIX[k]) < 0.04 for k in MIX), counts


def test_shipped_files_regenerate_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, "tools/make_math_dataset.py", "--out", str(tmp_path / "math")], cwd=REPO,
                   check=True, capture_output=True)
    subprocess.run([sys.executable, "tools/build_tokenizer.py", "--data", str(tmp_path / "math"), "--out",
                    str(tmp_path / "tok")], cwd=REPO, check=True, capture_output=True)
    for name in SPLITS + BENCH:
        assert (tmp_path / "math" / name).read_bytes() == (MATH / name).read_bytes(), name
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "tok" / name).read_bytes() == (ASSETS_DIR / "tokenizer" / name).read_bytes(), name
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024


def test_more_pretraining_is_disjoint_from_every_shipped_file():
    from prefix_rft_megatron.data.synthetic_math import more_pretraining, shipped_problems

    shipped = shipped_problems()
    assert len(shipped) == 2000 + 300 + 2000 + 100 + 100 + 50
    extra = more_pretraining(10000)
    assert extra == more_pretraining(10000) and len({p.problem for p in extra}) == 10000
    assert not shipped & {p.problem for p in extra}
