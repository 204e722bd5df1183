"""The example override files load against the schema, with the layouts their READMEs describe."""

from prefix_rft_megatron.config import load_config
from prefix_rft_megatron.launch.memory import LLAMA3_70B, QWEN25_MATH_7B, estimate_for_config


def test_qwen_7b_config_loads():
    cfg = load_config(["conf/qwen2.5-math-7b.yaml"])
    assert (cfg.parallel.tp, cfg.parallel.pp) == (4, 1) and 8 % (cfg.parallel.tp * cfg.parallel.pp) == 0
    assert cfg.rollout.engine == "sglang" and cfg.train.colocate and cfg.rollout.num_servers * cfg.rollout.tp_size == 8
    # prefix-rft.md section 7
    assert (cfg.train.prompts_per_step, cfg.train.mini_batch_prompts, cfg.algorithm.group_size) == (128, 64, 8)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip, cfg.train.steps) == (1e-6, 0.01, 1.0, 500)
    assert (cfg.rollout.temperature, cfg.rollout.max_new_tokens, cfg.data.max_prompt_tokens) == (1.0, 8192, 1024)
    assert cfg.algorithm.schedule.decay_steps == 500
    assert (cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p, cfg.eval.max_new_tokens) == (32, 0.6, 0.95, 8192)
    est = estimate_for_config(cfg, QWEN25_MATH_7B, world_size=8)
    assert 20 < est["total_gib"] < 30  # README: ~25 GiB per GPU


def test_llama_70b_config_loads():
    cfg = load_config(["conf/llama-70b.yaml"])
    assert cfg.parallel.tp == 8 and 2 <= cfg.parallel.pp <= 4
    assert cfg.rollout.weight_sync == "distributed" and not cfg.train.colocate and cfg.rollout.server_urls
    est = estimate_for_config(cfg, LLAMA3_70B, world_size=64)
    assert 24 < est["total_gib"] < 32  # README: ~28 GiB per GPU
