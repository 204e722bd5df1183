"""Every shipped config as the job would run it: the settings each stage derives, the SGLang servers' launch
command, the torchrun command, and the pre-flight check's verdict (what `prefix-rft launch --check` prints)."""

import pytest

from prefix_rft_megatron.config import check_training, load_config
from prefix_rft_megatron.launch import recipes
from prefix_rft_megatron.launch.config import LaunchConfig
from prefix_rft_megatron.launch.preflight import run_check
from prefix_rft_megatron.rollout.sglang import build_server_command

# config -> (nodes, GPUs per node) its example README describes
SHIPPED = {"conf/qwen2.5-math-7b.yaml": (1, 8), "conf/llama-70b.yaml": (8, 8), "conf/cpu_demo.yaml": (1, 1)}


def test_qwen_7b_config_as_the_job_sees_it():
    cfg = load_config(["conf/qwen2.5-math-7b.yaml"])
    assert check_training(cfg, 8) == 2  # TP 4 x DP 2
    assert cfg.rollout.engine == "sglang" and cfg.train.colocate and cfg.rollout.num_servers * cfg.rollout.tp_size == 8
    # prefix-rft.md section 7
    assert (cfg.train.prompts_per_step, cfg.train.mini_batch_prompts, cfg.algorithm.group_size) == (128, 64, 8)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.grad_clip, cfg.train.steps) == (1e-6, 0.01, 1.0, 500)
    assert (cfg.algorithm.temperature, cfg.rollout.max_new_tokens, cfg.data.max_prompt_tokens) == (1.0, 8192, 1024)
    assert (cfg.eval.k, cfg.eval.temperature, cfg.eval.top_p, cfg.eval.max_new_tokens) == (32, 0.6, 0.95, 8192)
    # the launched servers load the policy (the recipe could not start when rollout.model_path stayed empty)
    cmds = [build_server_command(cfg.rollout, i) for i in range(cfg.rollout.num_servers)]
    assert all(c[c.index("--model-path") + 1] == cfg.model.hf_path for c in cmds)
    assert [c[c.index("--base-gpu-id") + 1] for c in cmds] == [str(i) for i in range(8)]
    assert all(c[c.index("--mem-fraction-static") + 1] == "0.5" and "--enable-memory-saver" in c for c in cmds)


def test_llama_70b_config_as_the_job_sees_it():
    cfg = load_config(["conf/llama-70b.yaml"])
    assert check_training(cfg, 64) == 2  # TP 8 x PP 4 x DP 2
    assert cfg.rollout.weight_sync == "distributed" and not cfg.train.colocate and cfg.rollout.server_urls
    assert cfg.rollout.update_group_master_address == ""  # rank 0's own address, found at start-up


@pytest.mark.parametrize("conf", list(SHIPPED))
def test_shipped_config_launch_command(conf, tmp_path):
    nodes, gpus = SHIPPED[conf]
    lc = LaunchConfig(executor="slurm" if nodes > 1 else "local", nodes=nodes, gpus_per_node=gpus, account="a",
                      config_files=[conf], packager="none", experiment_dir=str(tmp_path), remote_job_dir=str(tmp_path))
    out = recipes.dryrun(lc)
    assert f"--nnodes {nodes} --nproc-per-node {gpus}" in out["command"]
    assert out["command"].endswith(f"-m prefix_rft_megatron.cli train {conf}")


@pytest.mark.parametrize("conf", ["conf/qwen2.5-math-7b.yaml", "conf/llama-70b.yaml"])
def test_shipped_gpu_configs_fit_80gb(conf):
    nodes, gpus = SHIPPED[conf]
    result = run_check([conf], [], nodes, gpus, 80.0)
    assert result.verdict == "fits", result.table
    assert "training peak" in result.table and "weight-sync peak" in result.table
