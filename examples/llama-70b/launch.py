"""Prefix-RFT on a 70B Llama across Slurm nodes with NeMo-Run: rollout servers on their own nodes, then the trainer.

    # 1. SGLang servers, one per rollout node (TP 8), in their own Slurm job:
    python examples/llama-70b/launch.py serve --account ACC --partition PART --image IMG [--rollout-nodes 2]
    # 2. once they are up (squeue shows their nodes), the trainer on 8 nodes (TP 8 x PP 4 x DP 2):
    python examples/llama-70b/launch.py train --account ACC --partition PART --image IMG \
        --rollout-url http://NODE_A:30000 --rollout-url http://NODE_B:30000 [key=value ...]

Add --dryrun to print the sbatch script instead of submitting. Run from the repository root: the trainer's code
reaches the job as a git archive of HEAD (NeMo-Run GitArchivePackager), so commit first; --ssh-host LOGIN and
--remote-job-dir DIR submit from a machine outside the cluster. Paths in conf/llama-70b.yaml are placeholders.
"""

import argparse
import sys

from prefix_rft_megatron.config import load_config
from prefix_rft_megatron.launch.config import LaunchConfig
from prefix_rft_megatron.launch.recipes import dryrun, launch, sglang_server_script, slurm_executor

CONF = "conf/llama-70b.yaml"
MOUNTS = ["/lustre:/lustre"]
# TORCH_NCCL_ASYNC_ERROR_HANDLING and CUDA_DEVICE_MAX_CONNECTIONS are set for every Slurm job (launch.config)
ENV = {"HF_HOME": "/lustre/hf_cache", "TOKENIZERS_PARALLELISM": "false"}


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["serve", "train"])
    p.add_argument("--account", required=True)
    p.add_argument("--partition", default="")
    p.add_argument("--image", required=True, help="container image with this package, Megatron-Core, TE, SGLang")
    p.add_argument("--train-nodes", type=int, default=8)
    p.add_argument("--rollout-nodes", type=int, default=2)
    p.add_argument("--rollout-url", action="append", default=[])
    p.add_argument("--time", default="24:00:00")
    p.add_argument("--ssh-host", default="")
    p.add_argument("--remote-job-dir", default="")
    p.add_argument("--nccl-socket-ifname", default="", help="NCCL_SOCKET_IFNAME of both jobs, e.g. ib0")
    p.add_argument("--nccl-ib-hca", default="", help="NCCL_IB_HCA, e.g. mlx5")
    p.add_argument("--nccl-debug", default="", help="NCCL_DEBUG (opt-in), e.g. INFO")
    p.add_argument("--dryrun", action="store_true")
    a, overrides = p.parse_known_args(argv)

    common = dict(executor="slurm", account=a.account, partition=a.partition, time=a.time, gpus_per_node=8,
                  container_image=a.image, mounts=MOUNTS, env=ENV, ssh_host=a.ssh_host,
                  remote_job_dir=a.remote_job_dir, nccl_socket_ifname=a.nccl_socket_ifname, nccl_ib_hca=a.nccl_ib_hca,
                  nccl_debug=a.nccl_debug)
    if a.what == "serve":
        # the servers hold what the trainer will ask of them: its model, a prompt plus a full response, its memory
        cfg = load_config([CONF], overrides)
        rollout, data = cfg.rollout, cfg.data
        lc = LaunchConfig(nodes=a.rollout_nodes, job_name="llama-70b-rollout", packager="none", **common)
        script = sglang_server_script(rollout.model_path or cfg.model.hf_path, tp_size=rollout.tp_size, port=30000,
                                      mem_fraction_static=rollout.mem_fraction_static,
                                      context_length=data.max_prompt_tokens + rollout.max_new_tokens)
        executor = slurm_executor(lc, torchrun=False)
        name = "sglang"
    else:
        if a.rollout_url:
            overrides.append(f"rollout.server_urls=[{','.join(a.rollout_url)}]")
        lc = LaunchConfig(nodes=a.train_nodes, job_name="llama-70b-prefix-rft", config_files=[CONF],
                          overrides=overrides, **common)
        script, executor, name = None, None, "train"
    if a.dryrun:
        print(dryrun(lc, script=script, executor=executor, name=name)["sbatch"])
        if a.what == "serve":
            print(script.inline)
        return 0
    print(launch(lc, script=script, executor=executor, name=name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
