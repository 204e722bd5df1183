"""Every patch of, and every reach into the private parts of, an upstream library, in one package.

Each module names the upstream release it was written against, and importing it checks that the installed release
is one of those (`require`): an upgrade that could silently change what a patch touches stops with one line instead.

| module | upstream | what |
| --- | --- | --- |
| `cpu` | megatron-core 0.16 | CUDA hard-coded in bookkeeping mapped to the CPU, only without CUDA (tests, the demo) |
| `megatron_optimizer` | megatron-core 0.16 | the torch-Adam `step` of the distributed optimizer across save / load |
| `megatron_dist_save` | megatron-core 0.16 | the torch_dist save without its multiprocessing Manager process |
| `nemo_run` | nemo-run 0.11 | the experiment id / directory and the dry run's command, which NeMo-Run keeps private |
"""

from __future__ import annotations

from importlib import metadata

# distribution -> the release prefixes the patches here were written and tested against
TARGETS = {"megatron-core": ("0.16.",), "nemo_run": ("0.11.",)}


class UnsupportedVersion(RuntimeError):
    """An upstream release the patches in compat/ were not written for (one line)."""


def require(distribution: str) -> str:
    """The installed version of `distribution`; raises UnsupportedVersion unless it is one TARGETS names."""
    try:
        version = metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return ""  # not installed: whatever needs it fails on import, with its own message
    if not version.startswith(TARGETS[distribution]):
        raise UnsupportedVersion(
            f"{distribution} {version} is installed; prefix_rft_megatron/compat patches {distribution} "
            f"{' / '.join(p + 'x' for p in TARGETS[distribution])} (install that, or port compat/ first)")
    return version
