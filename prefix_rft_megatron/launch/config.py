"""Launch configuration: where and how `prefix-rft train` runs (NeMo-Run executors), as a plain dataclass.

Plain types only, like the training config, so it can be built from command-line flags or a YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

# Every Slurm job's processes get these (NCCL settings from the fields below are added to them): a rank that hits an
# NCCL error or timeout aborts the job instead of hanging it (PyTorch >= 2.2's name), and the collectives' launch
# order is kept (Megatron's TP communication overlap needs it).
SLURM_BASE_ENV = {"TORCH_NCCL_ASYNC_ERROR_HANDLING": "1", "CUDA_DEVICE_MAX_CONNECTIONS": "1"}

EXECUTORS = ("local", "slurm")
PACKAGERS = ("git", "none")


@dataclass
class LaunchConfig:
    # "local": torchrun on this machine (NeMo-Run LocalExecutor); "slurm": sbatch + srun + torchrun (SlurmExecutor).
    executor: str = "local"
    # Nodes of the job (local: must be 1).
    nodes: int = 1
    # Processes per node = GPUs per node (torchrun --nproc-per-node; Slurm --gpus-per-node).
    gpus_per_node: int = 8
    # `prefix-rft` subcommand run under torchrun: "train", or e.g. "show-config" to check a config on the cluster.
    command: str = "train"
    # Config YAML files passed to the subcommand, in order (paths as seen by the job: relative to the code dir).
    config_files: List[str] = field(default_factory=list)
    # `key=value` overrides passed after the config files.
    overrides: List[str] = field(default_factory=list)
    # Environment variables of every process (e.g. HF_HOME, NCCL settings, WANDB_API_KEY from your environment).
    env: Dict[str, str] = field(default_factory=dict)
    # Name of the NeMo-Run experiment and of the Slurm job (the job is "<job_name>-train").
    job_name: str = "prefix-rft"
    # Directory NeMo-Run keeps experiments in (logs, sbatch scripts); empty: NeMo-Run's default (~/.nemo_run).
    experiment_dir: str = ""
    # torchrun rendezvous port on the head node (multi-node).
    rdzv_port: int = 29500

    # --- Slurm ---
    # Slurm account (sbatch --account); required for slurm.
    account: str = ""
    # Slurm partition (sbatch --partition); empty: the cluster's default.
    partition: str = ""
    # Wall-clock limit (sbatch --time), HH:MM:SS or D-HH:MM:SS.
    time: str = "04:00:00"
    # Container image run by pyxis/enroot (srun --container-image); empty runs on the nodes' own environment.
    container_image: str = ""
    # Container mounts "src:dst[:flags]" (srun --container-mounts): data, checkpoints, HF cache.
    mounts: List[str] = field(default_factory=list)
    # Ask for whole nodes (sbatch --exclusive).
    exclusive: bool = True
    # How the code reaches the job: "git" (NeMo-Run archives the repository's HEAD into the job's code dir, the
    # working directory of the job) or "none" (the image or a mount already has the package installed; give
    # absolute config paths).
    packager: str = "git"
    # Submit through SSH to this login node; empty: sbatch runs on this machine (NeMo-Run LocalTunnel).
    ssh_host: str = ""
    # SSH user for ssh_host (empty: the current user).
    ssh_user: str = ""
    # Directory on the cluster's shared filesystem for NeMo-Run's job files; empty: <experiment_dir or ~/.nemo_run>
    # (only sensible when sbatch runs on this machine).
    remote_job_dir: str = ""
    # Return once the job is submitted instead of following it (Slurm only).
    detach: bool = True
    # CPU cores of the one Slurm task per node (sbatch --cpus-per-task), which holds gpus_per_node trainer ranks and
    # the reward workers; 0: 6 per GPU + reward.num_workers (Slurm's own default is 1 core for the whole task).
    cpus_per_task: int = 0
    # Host memory per node (sbatch --mem); "0" is Slurm's "all of the node's memory" (the fully_reshardable
    # optimizer save/load takes ~12 bytes per parameter of a rank's TP/PP share on top of the trainer's own).
    mem: str = "0"

    # --- NCCL (exported to every process; empty leaves NCCL's own choice) ---
    # Network interface(s) of NCCL's bootstrap and socket transport (NCCL_SOCKET_IFNAME), e.g. "ib0" or "^lo,docker".
    nccl_socket_ifname: str = ""
    # InfiniBand HCAs NCCL may use (NCCL_IB_HCA), e.g. "mlx5"; empty: all.
    nccl_ib_hca: str = ""
    # NCCL_DEBUG level, e.g. "INFO" or "WARN" (opt-in: INFO is verbose); empty: off.
    nccl_debug: str = ""

    def __post_init__(self) -> None:
        def check(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"launch.{msg}")

        check(self.executor in EXECUTORS, f"executor={self.executor!r}: expected one of {EXECUTORS}")
        check(self.packager in PACKAGERS, f"packager={self.packager!r}: expected one of {PACKAGERS}")
        check(self.nodes >= 1 and self.gpus_per_node >= 1, "nodes and gpus_per_node must be >= 1")
        check(self.executor != "local" or self.nodes == 1, f"nodes={self.nodes}: the local executor runs one node")
        check(self.executor != "slurm" or bool(self.account), "account: required with executor=slurm")
        check(bool(self.command), "command must not be empty")
        check(bool(self.job_name), "job_name must not be empty")
        check(self.cpus_per_task >= 0, f"cpus_per_task={self.cpus_per_task}: must be >= 0 (0: derived)")
        for m in self.mounts:
            check(":" in m, f"mounts: {m!r} is not src:dst")
        for o in self.overrides:
            check("=" in o, f"overrides: {o!r} is not key=value")


def nccl_env(lc: LaunchConfig) -> Dict[str, str]:
    """The environment of a Slurm job's processes: SLURM_BASE_ENV, the NCCL fields that are set, then `lc.env`
    (which wins)."""
    env = dict(SLURM_BASE_ENV)
    for key, value in (("NCCL_SOCKET_IFNAME", lc.nccl_socket_ifname), ("NCCL_IB_HCA", lc.nccl_ib_hca),
                       ("NCCL_DEBUG", lc.nccl_debug)):
        if value:
            env[key] = value
    return {**env, **lc.env}
