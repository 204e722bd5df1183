"""`load_tokenizer` gives the tokenizer its files describe, whatever model config.json sits beside them.

An HF checkpoint directory (model.hf_path, the trainer's export) holds a config.json; for a Qwen2 one transformers 5's
AutoTokenizer swapped the bundled tokenizer for a Qwen2Tokenizer that splits digits off their space, and
`prefix-rft eval` on an export saw prompts the trainer never produced (tests/train/test_train_eval_parity.py)."""

import json
import shutil

import pytest

from prefix_rft_megatron.data import DataConfig, load_tokenizer
from prefix_rft_megatron.data.config import resolve_path
from prefix_rft_megatron.data.tokenizer import PromptEncoder
from prefix_rft_megatron.evaluation import load_benchmark
from prefix_rft_megatron.model.tiny import tiny_hf_config

TEXTS = ["Compute 4 + 4 * 7.", "Solve for x: 3x - 2 = 13.", "ones: 7 + 0 = 7. tens: 3 + 3 = 6. \\boxed{67}"]


def _encodings(tok):
    problems = list(load_benchmark("bundled:math_chain/eval.jsonl", max_problems=20).problems) + TEXTS
    raw = PromptEncoder(DataConfig(), tok).encode_prompts(problems)
    chat = PromptEncoder(DataConfig(use_chat_template=True, system_prompt="Be brief."), tok).encode_prompts(problems)
    demos = PromptEncoder(DataConfig(), tok).encode_demos(TEXTS)
    decoded = [tok.decode(ids, skip_special_tokens=True) for ids in raw]
    return raw, chat, demos, decoded, (tok.eos_token_id, tok.pad_token_id, tok.bos_token_id, len(tok))


@pytest.mark.parametrize("family", ["qwen2", "llama"])
@pytest.mark.parametrize("resaved", [False, True], ids=["copied", "save_pretrained"])
def test_same_tokenizer_with_a_model_config_beside_it(tmp_path, family, resaved):
    bundled = load_tokenizer("bundled:tokenizer")
    d = tmp_path / "ckpt"
    if resaved:  # what the demo and the tests do: tok.save_pretrained(hf_dir)
        bundled.save_pretrained(d)
    else:
        shutil.copytree(resolve_path("bundled:tokenizer"), d)
    (d / "config.json").write_text(json.dumps(tiny_hf_config(family=family, vocab_size=len(bundled))))
    beside_config = load_tokenizer(str(d))
    assert _encodings(beside_config) == _encodings(bundled)
    assert bundled("Compute 4 + 4 * 7.")["input_ids"] == [1, 341, 312, 270, 312, 286, 316, 18]  # " 4" is one token
