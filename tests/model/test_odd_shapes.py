"""Odd model shapes through the converters and Megatron: HF -> Megatron -> HF bit-identical, and logits equal
transformers' (fp32, max |diff| <= 1e-5; tighter than tests/model/test_parity.py's 1e-4 so that a lost RoPE factor,
1.0e-4 here, fails).

- Llama with Llama 3.x RoPE scaling as transformers 5 saves it (under `rope_parameters`, not `rope_scaling`), MQA
  (one KV head) and an explicit head_dim (hidden 64, 4 heads of 32): the scaling changes the low RoPE frequencies, so
  a lost factor shows at any position;
- Qwen2 with tied embeddings, an odd vocabulary (1001 rows, padded to 1024 / 1280 for TP 1 / 2) and q/k/v biases,
  also at TP=2.
RoPE scaling Megatron cannot express, and layouts that cannot split a model, are refused with one line.
"""

import json

import pytest
import torch

from distributed import run_torchrun
from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf
from prefix_rft_megatron.model.arch import ArchError, ModelArch
from prefix_rft_megatron.model.tiny import save_tiny_hf_model

TOL = 1e-5  # measured: 0 at TP=1, 9.5e-7 (log-probs) at TP=2; a lost RoPE factor gives 1.0e-4
LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
MODELS = {
    "llama_mqa_rope3": dict(family="llama", num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                            rope_theta=500000.0, rope_scaling=LLAMA3_ROPE, max_position_embeddings=131072, seed=5),
    "qwen2_tied_vocab1001": dict(family="qwen2", tie_word_embeddings=True, vocab_size=1001, seed=6),
}
TP2 = ("qwen2_tied_vocab1001",)  # one KV head cannot be split over two TP ranks


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    return {name: save_tiny_hf_model(root / name, **kw) for name, kw in MODELS.items()}


def test_transformers5_saves_rope_under_rope_parameters(models):
    cfg = json.loads((models["llama_mqa_rope3"] / "config.json").read_text())
    assert cfg["rope_parameters"]["rope_type"] == "llama3" and not cfg.get("rope_scaling")
    arch = ModelArch.from_hf(models["llama_mqa_rope3"])
    assert (arch.llama3_rope_factor, arch.rope_theta, arch.num_query_groups, arch.head_dim) == (8.0, 500000.0, 1, 32)


@pytest.mark.parametrize("name", list(MODELS))
def test_roundtrip_bit_identical(models, tmp_path, name):
    meg = convert_hf_to_megatron(models[name], tmp_path / "meg", tp=1, progress=False)
    back = convert_megatron_to_hf(meg, tmp_path / "hf", progress=False)
    a, b = HFCheckpointReader(models[name]), HFCheckpointReader(back)
    assert set(a.weight_map) == set(b.weight_map)
    for n in a.weight_map:
        assert torch.equal(a.get(n), b.get(n)), n


@pytest.mark.parametrize("tp", [1, 2])
def test_logits_match_transformers(models, tmp_path, tp):
    names = list(MODELS) if tp == 1 else list(TP2)
    args = [f"{n}={models[n]}:{convert_hf_to_megatron(models[n], tmp_path / n, tp=tp, progress=False)}" for n in names]
    run_torchrun("logits_parity.py", str(tmp_path / "diffs.json"), "128", *args, nproc=tp)
    diffs = json.loads((tmp_path / "diffs.json").read_text())
    assert set(diffs) == set(names)
    for name, d in diffs.items():
        assert d["logit"] <= TOL and d["logprob"] <= TOL, (name, d)


def _config(**kw):
    from prefix_rft_megatron.model.tiny import tiny_hf_config

    return tiny_hf_config(family="llama", **kw)


@pytest.mark.parametrize("rope,match", [
    ({**LLAMA3_ROPE, "original_max_position_embeddings": 4096}, "original_max_position_embeddings=4096"),
    ({**LLAMA3_ROPE, "low_freq_factor": 2.0}, "low_freq_factor=2.0"),
    ({"rope_type": "yarn", "factor": 4.0}, "rope_type='yarn' is not supported"),
])
@pytest.mark.parametrize("key", ["rope_scaling", "rope_parameters"])
def test_inexpressible_rope_scaling_refused(rope, match, key):
    with pytest.raises(ArchError, match=match) as err:
        ModelArch.from_hf(_config(**{key: rope}))
    assert len(str(err.value).splitlines()) == 1 and key in str(err.value)


def test_mqa_refused_at_tp2():
    arch = ModelArch.from_hf(_config(num_key_value_heads=1))
    with pytest.raises(ArchError, match="tp=2 does not divide num_key_value_heads=1"):
        arch.check_parallel(2, 1)
