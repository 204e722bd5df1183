"""The per-GPU memory estimator against a hand calculation, and the parameter counts of two public models."""

import pytest

from prefix_rft_megatron.launch.memory import (
    GiB, LLAMA3_70B, QWEN25_MATH_7B, ModelShape, estimate_memory, params_per_gpu,
)

# h=4, ffn=8, 4 layers, 2 heads of dim 2, 1 kv head (kv dim 2), vocab 10, untied.
TINY = ModelShape(num_layers=4, hidden_size=4, ffn_hidden_size=8, num_attention_heads=2, num_kv_heads=1,
                  vocab_size=10)


def test_param_counts_by_hand():
    # per layer: q 4x4=16, k 4x2=8, v 8, o 16, MLP 3x4x8=96 -> 144 sharded; 2 norms x 4 = 8 replicated
    assert TINY.layer_params() == (144, 8)
    # 4 layers x 152 + embedding 40 + output 40 + final norm 4
    assert TINY.num_params() == 692
    # TP 2, PP 1: 4 x (72 + 8) + embedding 5x4 + output 5x4 + final norm 4
    assert params_per_gpu(TINY, tp=2, pp=1) == 364
    # TP 2, PP 2: last stage 2 x 80 + output 20 + final norm 4 = 184 (first stage: 160 + 20)
    assert params_per_gpu(TINY, tp=2, pp=2) == 184


def test_estimate_by_hand():
    est = estimate_memory(TINY, tp=2, pp=2, dp=2, seq_len=16, micro_batch_size=1)
    n = 184
    assert est["weights_gib"] * GiB == pytest.approx(2 * n)
    assert est["grads_gib"] * GiB == pytest.approx(4 * n)
    assert est["optimizer_gib"] * GiB == pytest.approx(12 * n / 2)  # sharded over DP=2
    # 34 s h / tp per layer = 34*16*4/2 = 1088; 2 layers per stage x 2 micro-batches in flight
    assert est["activations_gib"] * GiB == pytest.approx(4 * 1088)
    assert est["logits_gib"] * GiB == pytest.approx(2 * 4 * 16 * 5)
    assert est["total_gib"] * GiB == pytest.approx(368 + 736 + 1104 + 4352 + 640)
    no_dist = estimate_memory(TINY, tp=2, pp=2, dp=2, seq_len=16, distributed_optimizer=False)
    assert no_dist["optimizer_gib"] * GiB == pytest.approx(12 * n)
    rec = estimate_memory(TINY, tp=2, pp=2, dp=2, seq_len=16, recompute=True)
    assert rec["activations_gib"] * GiB == pytest.approx(4 * 64 + 1088)  # 2 s h / tp per layer + one full layer


def test_public_model_sizes():
    assert QWEN25_MATH_7B.num_params() == pytest.approx(7.62e9, rel=2e-3)  # Qwen2.5-7B: 7.61B parameters
    assert LLAMA3_70B.num_params() == pytest.approx(70.6e9, rel=2e-3)  # Llama 3 70B: 70.6B parameters
    hf = {"model_type": "qwen2", "num_hidden_layers": 28, "hidden_size": 3584, "intermediate_size": 18944,
          "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064, "tie_word_embeddings": False}
    assert ModelShape.from_hf_config(hf) == QWEN25_MATH_7B


def test_pp_must_divide_layers():
    with pytest.raises(ValueError, match="pp=3"):
        params_per_gpu(TINY, tp=1, pp=3)
