"""Mistakes a user can make fail with one clear line naming the file and the problem."""

import json
import shutil
import subprocess
import sys

import pytest

from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
from prefix_rft_megatron.model.arch import ArchError
from prefix_rft_megatron.model.tiny import save_tiny_hf_model

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def run_tool(*args):
    proc = subprocess.run([sys.executable, str(REPO / "tools" / args[0]), *args[1:]], capture_output=True, text=True)
    return proc.returncode, proc.stderr.strip().splitlines()


def test_missing_config_json(tmp_path):
    rc, err = run_tool("convert_hf_to_megatron.py", "--hf-dir", str(tmp_path), "--out", str(tmp_path / "o"))
    assert rc == 2 and err[-1] == f"error: {tmp_path}/config.json: not found (expected a Hugging Face config.json)"


def test_unsupported_architecture(tiny_hf_models, tmp_path):
    src = shutil.copytree(tiny_hf_models["llama_untied"], tmp_path / "m")
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(architectures=["MixtralForCausalLM"], model_type="mixtral")
    (src / "config.json").write_text(json.dumps(cfg))
    rc, err = run_tool("convert_hf_to_megatron.py", "--hf-dir", str(src), "--out", str(tmp_path / "o"))
    assert rc == 2 and "unsupported architecture ['MixtralForCausalLM']" in err[-1] and str(src) in err[-1]


def test_tp_must_divide_heads(tiny_hf_models, tmp_path):
    rc, err = run_tool("convert_hf_to_megatron.py", "--hf-dir", str(tiny_hf_models["llama_untied"]),
                       "--out", str(tmp_path / "o"), "--tp", "3")
    assert rc == 2 and "tp=3 does not divide num_attention_heads=4" in err[-1]
    assert not (tmp_path / "o").exists()  # nothing half-written


def test_missing_tensor_named(tiny_hf_models, tmp_path):
    src = shutil.copytree(tiny_hf_models["llama_untied"], tmp_path / "m")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    del index["weight_map"]["model.layers.2.mlp.up_proj.weight"]
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ArchError, match="lacks 1 tensors .*model.layers.2.mlp.up_proj.weight"):
        convert_hf_to_megatron(src, tmp_path / "o", progress=False)


def test_existing_output_is_not_clobbered(tiny_hf_models, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep").write_text("x")
    rc, err = run_tool("convert_hf_to_megatron.py", "--hf-dir", str(tiny_hf_models["llama_untied"]),
                       "--out", str(tmp_path / "o"))
    assert rc == 2 and "exists and is not empty" in err[-1] and (tmp_path / "o" / "keep").exists()


def test_checkpoint_from_another_tp_layout(tmp_path):
    """vocab 1100 pads to 1280 for TP=2 but 1152 for TP=1: loading at TP=1 names both and the fix."""
    src = save_tiny_hf_model(tmp_path / "hf", vocab_size=1100)
    meg = convert_hf_to_megatron(src, tmp_path / "meg", tp=2, progress=False)
    code = (
        "from prefix_rft_megatron.parallel.init import initialize_parallel\n"
        "from prefix_rft_megatron.model import ModelArch, build_gpt_model\n"
        "from prefix_rft_megatron.model.load import load_model_weights, CheckpointLayoutError\n"
        "initialize_parallel(1, 1)\n"
        f"m = build_gpt_model(ModelArch.from_hf({str(src)!r}))\n"
        f"try:\n    load_model_weights(m, {str(meg)!r})\n"
        "except CheckpointLayoutError as e:\n    print('LAYOUT', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "LAYOUT" in out and "padded to 1280 rows (converted for tp=2)" in out and "--tp 1" in out


def test_compare_logits_fails_on_wrong_weights(tiny_hf_models, tmp_path):
    """The comparison really compares: another model's checkpoint exits non-zero with FAIL."""
    other = convert_hf_to_megatron(tiny_hf_models["llama_tied"], tmp_path / "other", progress=False)
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "compare_logits.py"), "--hf-dir", str(tiny_hf_models["llama_untied"]),
         "--megatron-ckpt", str(other)], capture_output=True, text=True, timeout=120)
    # Different tying means different tensors: the load itself must refuse (output_layer missing), or logits differ.
    assert proc.returncode != 0


def test_compare_logits_fails_on_perturbed_weights(tiny_hf_models, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src = shutil.copytree(tiny_hf_models["qwen2_untied"], tmp_path / "m")
    meg = convert_hf_to_megatron(src, tmp_path / "meg", progress=False)
    shard = sorted(src.glob("*.safetensors"))[0]
    tensors = load_file(shard)
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1e-2 * torch.randn_like(tensors[name])
    save_file(tensors, str(shard), metadata={"format": "pt"})
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "compare_logits.py"), "--hf-dir", str(src), "--megatron-ckpt", str(meg)],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "FAIL" in proc.stdout, proc.stdout + proc.stderr[-2000:]
