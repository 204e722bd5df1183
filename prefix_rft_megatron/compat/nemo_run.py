"""What `launch.recipes` needs of a NeMo-Run experiment that nemo-run 0.11 keeps private: its id and directory, and
the command its dry run resolved (torchx's AppDef role). Checked at import: nemo-run 0.11.x."""

from __future__ import annotations

from prefix_rft_megatron.compat import require

require("nemo_run")


def experiment_id(exp) -> str:
    return exp._id


def experiment_dir(exp) -> str:
    return exp._exp_dir


def dryrun_command(exp) -> list[str]:
    """[entrypoint, *args] of the first task after `exp.dryrun()`."""
    role = exp.jobs[0]._dryrun_info._app.roles[0]
    return [role.entrypoint, *role.args]
