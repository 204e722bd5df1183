"""The shipped tokenizer and the bundled task (math_chain): loadable offline, round-trip, the tokenizer rebuilt byte
for byte from its generated corpus, and every worked solution verifies against its answer."""

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
CHAIN = ASSETS_DIR / "math_chain"
SPLITS = ["train.jsonl", "validation.jsonl", "eval.jsonl", "pretrain.jsonl"]
EVAL = "bundled:math_chain/eval.jsonl"


def rows(name, root=CHAIN):
    with open(root / name, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The generated text the tokenizer is trained on (tools/make_math_dataset.py; not shipped)."""
    out = tmp_path_factory.mktemp("corpus") / "math"
    subprocess.run([sys.executable, "tools/make_math_dataset.py", "--out", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    return out


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


def test_tokenizer_round_trips_all_dataset_text(tokenizer, corpus):
    texts = []
    for name in SPLITS:
        texts += [t for r in rows(name) for t in (r["problem"], r["solution"], r["answer"])]
    for name in ("train.jsonl", "eval.jsonl", "pretrain.jsonl"):  # the generated corpus's splits
        texts += [t for r in rows(name, corpus) for t in (r["problem"], r["solution"], r["answer"])]
    for name in ("arith_id", "arith_ood", "fractions"):
        texts += [t for r in rows(f"bench/{name}.jsonl", corpus) for t in (r["problem"], r["answer"])]
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
        assert 10 <= len(e.demo_ids) <= 40 and len(e.prompt_ids) <= 32  # the demo's short chains


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


def test_solutions_verify():
    assert {name: len(rows(name)) for name in SPLITS} == {"train.jsonl": 380, "validation.jsonl": 125, "eval.jsonl": 350,
                                                          "pretrain.jsonl": 186}
    cfg = RewardConfig(num_workers=0)
    sample = rows("eval.jsonl") + rows("train.jsonl")[::5]
    assert all(score_one(r["solution"], r["answer"], cfg).correct for r in sample)
    # and a wrong answer does not verify: the check above can fail
    assert not any(score_one(r["solution"], str(int(r["answer"]) + 1), cfg).correct for r in sample[:50])


def test_generator_is_deterministic_and_follows_the_mix():
    a, b = generate(2000, seed=5), generate(2000, seed=5)
    assert a == b and a != generate(2000, seed=6)
    counts = {k: sum(p.kind == k for p in a) / len(a) for k in MIX}
    assert all(abs(counts[k] - MIX[k]) < 0.04 for k in MIX), counts


def test_tokenizer_rebuilds_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, "tools/build_tokenizer.py", "--out", str(tmp_path / "tok")], cwd=REPO, check=True,
                   capture_output=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        assert (tmp_path / "tok" / name).read_bytes() == (ASSETS_DIR / "tokenizer" / name).read_bytes(), name
    total = sum(p.stat().st_size for p in ASSETS_DIR.rglob("*") if p.is_file())
    assert total < 2 * 1024 * 1024
