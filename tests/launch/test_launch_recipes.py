"""NeMo-Run recipes: the local recipe runs a real `prefix-rft` command under torchrun; the Slurm recipe by dry run."""

import re

import pytest

from prefix_rft_megatron.launch import recipes
from prefix_rft_megatron.launch.cli import main
from prefix_rft_megatron.launch.config import LaunchConfig


def test_local_recipe_runs_training_under_torchrun(tmp_path):
    """The local recipe runs the product's main job for real: `prefix-rft train conf/cpu_demo.yaml` (the CPU demo's
    settings: Prefix-RFT on the bundled math_chain task, 2 steps, a tiny policy in place of the demo's base) under
    torchrun, through a NeMo-Run experiment."""
    import json
    from pathlib import Path

    from prefix_rft_megatron.data import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    tok = load_tokenizer("bundled:tokenizer")
    policy = save_tiny_hf_model(tmp_path / "policy", family="qwen2", tie_word_embeddings=True, vocab_size=len(tok),
                                hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, max_position_embeddings=256)
    out = tmp_path / "run"
    demo_conf = Path(__file__).resolve().parents[2] / "conf" / "cpu_demo.yaml"
    overrides = [f"model.hf_path={policy}", f"logging.output_dir={out}", "train.steps=2", "train.prompts_per_step=4",
                 "train.mini_batch_prompts=2", "train.micro_batch_size=16", "eval.max_problems=4",
                 "checkpoint.export_hf_at_end=true"]
    lc = LaunchConfig(gpus_per_node=1, command="train", config_files=[str(demo_conf)], overrides=overrides,
                      env={"OMP_NUM_THREADS": "1"}, experiment_dir=str(tmp_path / "exp"))
    res = recipes.launch(lc)
    assert res["status"] == "SUCCEEDED", res
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]
    assert all(m["reward/prefixed"] is not None for m in metrics)  # the demo's algorithm: Prefix-RFT
    assert metrics[-1]["eval/average"] is not None  # end-of-run held-out evaluation on math_chain
    assert (out / "checkpoints" / "step_000002").is_dir() and (out / "hf" / "config.json").is_file()


def test_local_recipe_reports_a_failing_command(tmp_path):
    lc = LaunchConfig(gpus_per_node=1, command="show-config", overrides=["train.stepz=1"],
                      experiment_dir=str(tmp_path / "exp"))
    res = recipes.launch(lc)
    assert res["status"] == "FAILED", res
    _, stderr = recipes.local_logs(res["job_dir"])
    assert "unknown key 'train.stepz'" in stderr


def test_slurm_recipe_dryrun_sbatch(tmp_path):
    lc = LaunchConfig(
        executor="slurm", nodes=4, gpus_per_node=8, account="acct_rl", partition="batch", time="12:00:00",
        container_image="nvcr.io/nvidia/pytorch:25.01-py3", mounts=["/lustre:/lustre", "/scratch/hf:/hf"],
        env={"HF_HOME": "/hf", "CUDA_DEVICE_MAX_CONNECTIONS": "1"}, job_name="rft70b", packager="none",
        config_files=["conf/llama-70b.yaml"], overrides=["train.steps=10", "rollout.server_urls=[http://n1:30000]"],
        experiment_dir=str(tmp_path / "exp"), remote_job_dir=str(tmp_path / "jobs"),
    )  # fmt: skip
    out = recipes.dryrun(lc)
    sbatch = out["sbatch"]
    flags = dict(re.findall(r"^#SBATCH --([a-z-]+)(?:=(.*))?$", sbatch, re.M))
    assert flags["nodes"] == "4" and flags["gpus-per-node"] == "8"
    assert flags["ntasks-per-node"] == "1"  # one torchrun agent per node, which starts 8 ranks
    assert flags["account"] == "acct_rl" and flags["partition"] == "batch" and flags["time"] == "12:00:00"
    assert flags["job-name"] == "rft70b-train" and "exclusive" in flags
    assert flags["cpus-per-task"] == str(6 * 8 + 32) and flags["mem"] == "0"  # 8 ranks + conf's 32 reward workers
    assert "export HF_HOME=/hf" in sbatch and "export CUDA_DEVICE_MAX_CONNECTIONS=1" in sbatch
    assert "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in sbatch and "NCCL_DEBUG" not in sbatch  # debug is opt-in
    srun = next(line for line in sbatch.splitlines() if line.startswith("srun "))
    assert "--container-image nvcr.io/nvidia/pytorch:25.01-py3" in srun
    assert re.search(r"--container-mounts /lustre:/lustre,/scratch/hf:/hf,\S+:/nemo_run", srun)
    torchrun = srun[srun.index("torchrun"):]
    assert "--nnodes 4 --nproc-per-node 8" in torchrun and "--node-rank $SLURM_NODEID" in torchrun
    # static rendezvous: node i holds ranks 8i..8i+7, so global rank 0 (the engines' driver) is on the head node
    assert "--rdzv-backend static --rdzv-endpoint $head_node_ip:29500" in torchrun
    assert torchrun.endswith("-m prefix_rft_megatron.cli train conf/llama-70b.yaml train.steps=10 "
                             "'rollout.server_urls=[http://n1:30000]'")
    assert out["command"].startswith("torchrun ") and "-m prefix_rft_megatron.cli train" in out["command"]


def test_sglang_server_recipe_dryrun(tmp_path):
    lc = LaunchConfig(executor="slurm", nodes=2, gpus_per_node=8, account="a", container_image="img",
                      packager="none", experiment_dir=str(tmp_path / "exp"), remote_job_dir=str(tmp_path / "jobs"))
    script = recipes.sglang_server_script("/m/llama", tp_size=8, port=30000, mem_fraction_static=0.8,
                                          context_length=9216)
    out = recipes.dryrun(lc, script=script, executor=recipes.slurm_executor(lc, torchrun=False), name="sglang")
    assert "#SBATCH --nodes=2" in out["sbatch"] and "#SBATCH --ntasks-per-node=1" in out["sbatch"]
    assert "torchrun" not in out["sbatch"]
    assert "bash /nemo_run/scripts/sglang.sh" in out["sbatch"]  # the server command, below
    assert "--mem-fraction-static 0.8 --context-length 9216" in script.inline
    # the job exports CUDA_DEVICE_MAX_CONNECTIONS=1 for the trainer; the server's line comes after it is unset
    unset, server = script.inline.splitlines()[:2]
    assert "CUDA_DEVICE_MAX_CONNECTIONS=1" in out["sbatch"] and unset.startswith("unset ")
    assert "CUDA_DEVICE_MAX_CONNECTIONS" in unset.split() and server.startswith("python -m sglang.launch_server")


def test_cli_dryrun_local_and_config_errors(tmp_path, capsys):
    assert main(["--dryrun", "--gpus-per-node", "2", "--experiment-dir", str(tmp_path), "parallel.tp=2",
                 "train.steps=3", "model.hf_path=/m"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"torchrun .*--nnodes 1 --nproc-per-node 2 .*-m prefix_rft_megatron.cli train parallel.tp=2 "
                     r"train.steps=3 model.hf_path=/m", printed)
    assert main(["--dryrun", "--experiment-dir", str(tmp_path), "train.steps=3"]) == 2  # a train job needs a model
    assert "model.hf_path is required" in capsys.readouterr().err
    # checked before anything is launched: unknown key, world size not a multiple of tp x pp, missing account
    assert main(["--dryrun", "train.stepz=3"]) == 2
    assert "unknown key 'train.stepz'" in capsys.readouterr().err
    assert main(["--dryrun", "--gpus-per-node", "6", "parallel.tp=4", "model.hf_path=/m"]) == 2
    assert "6 processes do not split into parallel.tp=4 x parallel.pp=1" in capsys.readouterr().err
    assert main(["--dryrun", "--executor", "slurm"]) == 2
    assert "account" in capsys.readouterr().err


def test_launch_config_validation():
    with pytest.raises(ValueError, match="nodes=2"):
        LaunchConfig(executor="local", nodes=2)
    with pytest.raises(ValueError, match="mounts"):
        LaunchConfig(mounts=["/no-colon"])


def test_nccl_settings_exported_when_set(tmp_path):
    lc = LaunchConfig(executor="slurm", nodes=2, account="a", packager="none", nccl_socket_ifname="ib0",
                      nccl_ib_hca="mlx5", nccl_debug="INFO", cpus_per_task=64, mem="1000G", config_files=[],
                      command="show-config", experiment_dir=str(tmp_path / "exp"), remote_job_dir=str(tmp_path / "j"))
    sbatch = recipes.dryrun(lc)["sbatch"]
    for line in ("export NCCL_SOCKET_IFNAME=ib0", "export NCCL_IB_HCA=mlx5", "export NCCL_DEBUG=INFO",
                 "#SBATCH --cpus-per-task=64", "#SBATCH --mem=1000G"):
        assert line in sbatch, line


def _example_70b(*argv):
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, str(repo / "examples" / "llama-70b" / "launch.py"), *argv, "--account", "a",
                           "--image", "img", "--dryrun"], capture_output=True, text=True, cwd=repo, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_llama_70b_example_dryruns_connect_and_size_the_jobs():
    """The 70B example as a user runs it: the trainer job pins rank 0 to the head node, sets NCCL and resources,
    and leaves the weight-update address to rank 0 (its own address on its route to the servers, never a loopback);
    the serve job gives the servers the context and memory fraction the trainer's config needs."""
    from prefix_rft_megatron.config import load_config

    train = _example_70b("train", "--rollout-url", "http://10.0.0.5:30000", "--nccl-socket-ifname", "ib0")
    assert "--rdzv-backend static" in train and "--node-rank $SLURM_NODEID" in train
    for line in ("export NCCL_SOCKET_IFNAME=ib0", "export TORCH_NCCL_ASYNC_ERROR_HANDLING=1",
                 f"#SBATCH --cpus-per-task={6 * 8 + 32}", "#SBATCH --mem=0", "#SBATCH --nodes=8"):
        assert line in train, line
    args = train[train.index("-m prefix_rft_megatron.cli train ") + len("-m prefix_rft_megatron.cli train "):]
    args = [a.strip("'") for a in args.splitlines()[0].split()]
    cfg = load_config([a for a in args if a.endswith(".yaml")], [a for a in args if not a.endswith(".yaml")])
    assert cfg.rollout.server_urls == ["http://10.0.0.5:30000"] and cfg.rollout.weight_sync == "distributed"
    assert cfg.rollout.update_group_master_address == ""  # rank 0 finds it: see test_update_group_address_...
    serve = _example_70b("serve")
    assert "--model-path /lustre/models/Llama-3.1-70B-Instruct --tp-size 8" in serve
    assert "--mem-fraction-static 0.85 --context-length 9216" in serve  # 1024 prompt + 8192 response tokens
