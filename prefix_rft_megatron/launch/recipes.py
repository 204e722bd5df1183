"""NeMo-Run recipes: `prefix-rft <command> CONFIG... overrides` under torchrun, on this machine or through Slurm.

One task, a `run.Script` running the package's CLI as a python module (`entrypoint="python"`, `m=True`; the
Script default entrypoint is bash), with NeMo-Run's torchrun launcher turning it into
`torchrun --nnodes N --nproc-per-node G ... -m prefix_rft_megatron.cli train ...`. The executor decides where:
`LocalExecutor` (one machine) or `SlurmExecutor` (sbatch script with pyxis container flags; srun starts one torchrun
agent per node, each with G processes).
"""

from __future__ import annotations

import glob
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

from prefix_rft_megatron.compat import nemo_run as nemo_run_private
from prefix_rft_megatron.launch.config import LaunchConfig, nccl_env

CLI_MODULE = "prefix_rft_megatron.cli"
TASK_NAME = "train"


def train_args(lc: LaunchConfig) -> List[str]:
    """Arguments after `python -m prefix_rft_megatron.cli`."""
    return [lc.command, *lc.config_files, *lc.overrides]


def train_script(lc: LaunchConfig):
    """The task: the product's CLI as a python module (torchrun -m)."""
    import nemo_run as run

    return run.Script(path=CLI_MODULE, m=True, entrypoint="python", args=train_args(lc))


def _torchrun(lc: LaunchConfig):
    """torchrun per node. Several nodes: the static rendezvous at the head node, so node i (SLURM_NODEID) holds
    global ranks i*G .. i*G+G-1 and rank 0 (which drives the rollout engines) is on the head node; c10d's rendezvous
    hands out node ranks in arrival order instead."""
    from nemo_run.core.execution.launcher import Torchrun

    return Torchrun(rdzv_port=lc.rdzv_port, rdzv_backend="static" if lc.nodes > 1 else "c10d")


def local_executor(lc: LaunchConfig):
    """torchrun with `gpus_per_node` processes on this machine."""
    import nemo_run as run

    # torchrun is looked up on PATH: put this interpreter's bin dir first (a venv that is not activated).
    env = {"PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]), **lc.env}
    return run.LocalExecutor(ntasks_per_node=lc.gpus_per_node, launcher=_torchrun(lc), env_vars=env)


def _tunnel(lc: LaunchConfig):
    from nemo_run.core.tunnel.client import LocalTunnel, SSHTunnel

    if lc.ssh_host:
        if not lc.remote_job_dir:
            raise ValueError("launch.remote_job_dir: required with ssh_host (a directory on the cluster)")
        return SSHTunnel(host=lc.ssh_host, user=lc.ssh_user or os.environ.get("USER", ""), job_dir=lc.remote_job_dir)
    job_dir = lc.remote_job_dir or os.path.join(_base_dir(lc), "slurm_jobs")
    return LocalTunnel(job_dir=job_dir)


def _base_dir(lc: LaunchConfig) -> str:
    from nemo_run.config import get_nemorun_home

    return lc.experiment_dir or get_nemorun_home()


def slurm_executor(lc: LaunchConfig, torchrun: bool = True, cpus_per_task: int | None = None):
    """sbatch: `nodes` nodes x `gpus_per_node` GPUs, one torchrun agent per node (NeMo-Run sets ntasks-per-node=1
    and torchrun's --nproc-per-node to gpus_per_node), the task's cores and memory, pyxis container image and
    mounts, NCCL settings and env exported. `torchrun=False`: one plain task per node (the SGLang servers).
    `cpus_per_task` overrides `lc.cpus_per_task` (the caller derives it when that is 0)."""
    import nemo_run as run

    packager = run.GitArchivePackager() if lc.packager == "git" else run.Packager()
    return run.SlurmExecutor(
        account=lc.account,
        partition=lc.partition or None,
        time=lc.time,
        nodes=lc.nodes,
        ntasks_per_node=lc.gpus_per_node if torchrun else 1,
        gpus_per_node=lc.gpus_per_node,
        exclusive=True if lc.exclusive else None,
        container_image=lc.container_image or None,
        container_mounts=list(lc.mounts),
        cpus_per_task=(cpus_per_task if cpus_per_task is not None else lc.cpus_per_task) or None,
        mem=lc.mem or None,
        env_vars=nccl_env(lc),
        job_name_prefix=f"{lc.job_name}-",
        tunnel=_tunnel(lc),
        packager=packager,
        launcher=_torchrun(lc) if torchrun else None,
    )


def sglang_server_script(model_path: str, tp_size: int = 8, port: int = 30000, mem_fraction_static: float = 0.85,
                         context_length: int = 0, extra_args: Sequence[str] = ()):
    """One SGLang server per node on all its GPUs, reachable from the trainer's nodes (separate rollout GPUs; the
    trainer attaches with rollout.server_urls and rollout.weight_sync=distributed). `context_length` (0: the
    model's max_position_embeddings) must hold a prompt plus a full response; see `server_settings`."""
    import shlex

    import nemo_run as run

    from prefix_rft_megatron.rollout.sglang.server import TRAINER_ONLY_ENV

    cmd = ["python", "-m", "sglang.launch_server", "--model-path", model_path, "--tp-size", str(tp_size),
           "--host", "0.0.0.0", "--port", str(port), "--dtype", "bfloat16", "--skip-tokenizer-init",
           "--mem-fraction-static", str(mem_fraction_static)]
    if context_length:
        cmd += ["--context-length", str(context_length)]
    cmd += list(extra_args)
    # every Slurm job exports CUDA_DEVICE_MAX_CONNECTIONS=1 (launch.config.SLURM_BASE_ENV), for the trainer only
    unset = "unset " + " ".join(TRAINER_ONLY_ENV) + "\n"
    return run.Script(inline=unset + " ".join(shlex.quote(c) for c in cmd) + "\n", entrypoint="bash")


def train_cpus_per_task(lc: LaunchConfig) -> int:
    """Cores of a trainer node's task: lc.cpus_per_task, or 6 per GPU plus the run config's reward workers."""
    if lc.cpus_per_task:
        return lc.cpus_per_task
    from prefix_rft_megatron.config import load_config

    workers = load_config(lc.config_files, lc.overrides).reward.num_workers if lc.command == "train" else 0
    return 6 * lc.gpus_per_node + workers


def build_executor(lc: LaunchConfig):
    if lc.executor == "local":
        return local_executor(lc)
    return slurm_executor(lc, cpus_per_task=train_cpus_per_task(lc))


def _experiment(lc: LaunchConfig):
    import nemo_run as run

    return run.Experiment(lc.job_name, base_dir=_base_dir(lc), log_level="WARN")


def launch(lc: LaunchConfig, tail_logs: bool = False, script=None, executor=None,
           name: str = TASK_NAME, preflight_gpu_mem_gib: float | None = 80.0) -> Dict[str, Any]:
    """Run the task (default: `train_script(lc)` on `build_executor(lc)`) through a NeMo-Run experiment. Local:
    blocks until torchrun exits. Slurm: submits (and returns at once when `lc.detach`).
    A `train` job of the default script is first put through the pre-flight check (`launch.preflight`, its table
    printed) at `preflight_gpu_mem_gib` GiB per GPU; one that does not fit raises CheckFailed and nothing is
    launched (None: no check).
    Returns {"experiment_id", "experiment_dir", "status", "job_dir"}."""
    if preflight_gpu_mem_gib is not None and script is None and lc.command == "train":
        from prefix_rft_megatron.launch.preflight import CheckFailed, run_check

        result = run_check(lc.config_files, lc.overrides, lc.nodes, lc.gpus_per_node, preflight_gpu_mem_gib)
        print(result.table + "\n" + result.verdict, flush=True)
        if result.verdict != "fits":
            raise CheckFailed(result.verdict)
    with _experiment(lc) as exp:
        exp.add(script or train_script(lc), executor=executor or build_executor(lc), name=name, tail_logs=tail_logs)
        exp.run(sequential=True, detach=lc.detach and lc.executor == "slurm", tail_logs=tail_logs)
    # Leaving the context waits for local jobs; the status is final then.
    try:
        status = exp.status(return_dict=True) or {}
    except Exception as e:  # noqa: BLE001 - e.g. sacct unreachable right after a detached submission
        status = {name: {"status": f"UNKNOWN ({type(e).__name__}: {e})"}}
    task = status.get(name, {})
    return {"experiment_id": nemo_run_private.experiment_id(exp), "experiment_dir": nemo_run_private.experiment_dir(exp),
            "status": str(task.get("status", "")), "job_dir": task.get("local_dir", "")}


def local_logs(job_dir: str, name: str = TASK_NAME) -> Tuple[str, str]:
    """(stdout, stderr) of rank 0 of a finished local job (torchelastic's per-rank logs under the job dir)."""
    def read(fname: str) -> str:
        hits = sorted(glob.glob(os.path.join(job_dir, "nemo_run", "*", name, "0", fname)))
        return Path(hits[-1]).read_text() if hits else ""

    return read("stdout.log"), read("stderr.log")


def dryrun(lc: LaunchConfig, keep: bool = False, script=None, executor=None,
           name: str = TASK_NAME) -> Dict[str, str]:
    """What would run, without running it, from NeMo-Run's own dry run (`Experiment.dryrun`):
    {"command": the torchrun command line of the task (from the scheduler's dry-run info),
     "sbatch": the sbatch script (slurm only: NeMo-Run materialises the `SlurmBatchRequest` into
     `<experiment dir>/<task>_sbatch.sh`, read back here), "experiment_dir": kept dir or ""}."""
    import shlex

    with _experiment(lc) as exp:
        exp.add(script or train_script(lc), executor=executor or build_executor(lc), name=name)
        exp.dryrun(log=False, delete_exp_dir=False)
        exp_dir = nemo_run_private.experiment_dir(exp)
        command = nemo_run_private.dryrun_command(exp)
    out: Dict[str, str] = {"command": " ".join(shlex.quote(a) for a in command),
                           "experiment_dir": exp_dir if keep else ""}
    try:
        sbatch = Path(exp_dir, f"{name}_sbatch.sh")
        if sbatch.is_file():
            out["sbatch"] = sbatch.read_text()
    finally:
        if not keep:
            shutil.rmtree(exp_dir, ignore_errors=True)
    return out
