"""`python -m prefix_rft_megatron.launch` (`prefix-rft launch`): run `prefix-rft train` through NeMo-Run.

  python -m prefix_rft_megatron.launch [--executor local|slurm] [--nodes N] [--gpus-per-node G]
      [--container-image IMG] [--mount SRC:DST ...] [--env KEY=VALUE ...] [--account A] [--partition P]
      [--time HH:MM:SS] [--job-name NAME] [--packager git|none] [--ssh-host H --remote-job-dir DIR]
      [--cpus-per-task N] [--mem M] [--nccl-socket-ifname IF] [--nccl-ib-hca HCA] [--nccl-debug LEVEL]
      [--command train] [--dryrun] [--check [--gpu-mem-gib N] [--hf-config F]] [--no-check]
      CONFIG.yaml ... [key=value ...]

The config files and overrides are checked here first (the same loader `train` uses), so a typo fails before a
job is queued; a `train` job is launched only after the pre-flight check (`--check`, `launch.preflight`) says it
fits (`--no-check` skips both). `--dryrun` prints the torchrun command and, for Slurm, the sbatch script; nothing
runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from prefix_rft_megatron.config.cli_args import split_config_args as _split
from prefix_rft_megatron.launch.config import LaunchConfig


def parse_args(argv: Sequence[str]) -> tuple[LaunchConfig | None, argparse.Namespace]:
    """(LaunchConfig, the parsed flags); no LaunchConfig for `--check`, which needs no executor settings."""
    d = LaunchConfig()
    p = argparse.ArgumentParser(prog="prefix-rft launch", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--executor", choices=["local", "slurm"], default=d.executor)
    p.add_argument("--nodes", type=int, default=None, help="nodes (default: the config's cluster.nodes)")
    p.add_argument("--gpus-per-node", type=int, default=None,
                   help="processes (GPUs) per node (default: the config's cluster.gpus_per_node)")
    p.add_argument("--command", default=d.command, help="prefix-rft subcommand to run (default: train)")
    p.add_argument("--container-image", default=d.container_image)
    p.add_argument("--mount", action="append", default=[], help="container mount SRC:DST (repeatable)")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for every process (repeatable)")
    p.add_argument("--account", default=d.account)
    p.add_argument("--partition", default=d.partition)
    p.add_argument("--time", default=d.time)
    p.add_argument("--job-name", default=d.job_name)
    p.add_argument("--experiment-dir", default=d.experiment_dir, help="NeMo-Run home for this experiment")
    p.add_argument("--packager", choices=["git", "none"], default=d.packager)
    p.add_argument("--ssh-host", default=d.ssh_host)
    p.add_argument("--ssh-user", default=d.ssh_user)
    p.add_argument("--remote-job-dir", default=d.remote_job_dir)
    p.add_argument("--no-exclusive", action="store_true", help="do not ask Slurm for whole nodes")
    p.add_argument("--cpus-per-task", type=int, default=d.cpus_per_task,
                   help="Slurm: cores of the per-node task (0: 6 per GPU + reward workers)")
    p.add_argument("--mem", default=d.mem, help="Slurm: host memory per node (sbatch --mem; 0: all)")
    p.add_argument("--nccl-socket-ifname", default=d.nccl_socket_ifname, help="NCCL_SOCKET_IFNAME")
    p.add_argument("--nccl-ib-hca", default=d.nccl_ib_hca, help="NCCL_IB_HCA")
    p.add_argument("--nccl-debug", default=d.nccl_debug, help="NCCL_DEBUG level (opt-in, e.g. INFO)")
    p.add_argument("--follow", action="store_true", help="Slurm: wait for the job and tail its logs")
    p.add_argument("--check", action="store_true",
                   help="only the pre-flight check: validate the config as the job sees it, count each pipeline "
                        "stage's parameters on the meta device, print the per-GPU memory table and 'fits' (or exit "
                        "non-zero with one line); no GPU needed. Also run before a `train` job is launched")
    p.add_argument("--no-check", action="store_true", help="launch without the pre-flight check")
    p.add_argument("--gpu-mem-gib", type=float, default=80.0, help="memory of one GPU for the check (default 80)")
    p.add_argument("--hf-config", default="", help="the model's config.json for the check (default: model.hf_path's)")
    p.add_argument("--dryrun", action="store_true", help="print the command (and sbatch script); run nothing")
    p.add_argument("config", nargs="*", help="CONFIG.yaml files and key=value overrides for the subcommand")
    a = p.parse_args(list(argv))
    if a.nodes is None or a.gpus_per_node is None:  # the job's size as the config gives it
        from prefix_rft_megatron.config import load_config

        cluster = load_config(*_split(a.config)).cluster
        a.nodes = cluster.nodes if a.nodes is None else a.nodes
        a.gpus_per_node = cluster.gpus_per_node if a.gpus_per_node is None else a.gpus_per_node
    if a.check:
        return None, a
    env = {}
    for item in a.env:
        if "=" not in item:
            p.error(f"--env {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        env[k] = v
    files, overrides = _split(a.config)
    lc = LaunchConfig(
        executor=a.executor, nodes=a.nodes, gpus_per_node=a.gpus_per_node, command=a.command, config_files=files,
        overrides=overrides, env=env, job_name=a.job_name,
        experiment_dir=a.experiment_dir, account=a.account, partition=a.partition, time=a.time,
        container_image=a.container_image, mounts=a.mount, exclusive=not a.no_exclusive, packager=a.packager,
        ssh_host=a.ssh_host, ssh_user=a.ssh_user, remote_job_dir=a.remote_job_dir, detach=not a.follow,
        cpus_per_task=a.cpus_per_task, mem=a.mem, nccl_socket_ifname=a.nccl_socket_ifname, nccl_ib_hca=a.nccl_ib_hca,
        nccl_debug=a.nccl_debug,
    )  # fmt: skip
    return lc, a


def check_config(lc: LaunchConfig) -> None:
    """Load the run's config here (raises ConfigError naming the file/key); for `train`, also what the job's world
    size must satisfy (TP x PP x DP, micro-batches)."""
    from prefix_rft_megatron.config import check_training, load_config

    cfg = load_config(lc.config_files, lc.overrides)
    if lc.command == "train":
        check_training(cfg, lc.nodes * lc.gpus_per_node)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        lc, a = parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as e:  # LaunchConfig.__post_init__, or a config that does not load (ConfigError)
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.check:
        from prefix_rft_megatron.launch import preflight

        return preflight.main(*_split(a.config), a.nodes, a.gpus_per_node, a.gpu_mem_gib, a.hf_config)
    from prefix_rft_megatron.config import ConfigError
    from prefix_rft_megatron.launch import recipes
    from prefix_rft_megatron.launch.preflight import CheckFailed

    if not a.no_check:
        try:
            check_config(lc)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    if a.dryrun:
        out = recipes.dryrun(lc)
        if "sbatch" in out:
            print(out["sbatch"])
        else:
            print(out["command"])
        return 0
    try:
        result = recipes.launch(lc, tail_logs=lc.executor == "local" or a.follow,
                                preflight_gpu_mem_gib=None if a.no_check else a.gpu_mem_gib)
    except (ConfigError, CheckFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"experiment {result['experiment_id']}: {result['status']} (logs: {result['job_dir']})")
    if lc.executor == "local":
        return 0 if result["status"].upper().startswith("SUCCEEDED") else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
