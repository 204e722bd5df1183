"""`prefix-rft train CONFIG.yaml ... [key=value ...]`: run the training loop.

Under torchrun it runs as is; launched as a plain process with parallel.tp * parallel.pp > 1, it relaunches itself
under `torchrun --standalone` with that many processes (data parallel size 1), forwarding SIGINT / SIGTERM to it.

Every user-caused error, at start-up or mid-run, ends in one line on stderr (`error: ...`, from rank 0 only) and a
non-zero exit code: 2 for a bad config, file or data, 130 / 143 when stopped by SIGINT (Ctrl-C) / SIGTERM (the first
one stops at the trainer's next stop point, between two stages of a step; a second one at once). The last complete
checkpoint stays as it was; the same command resumes from it. PREFIX_RFT_DEBUG=1 also prints the
traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import traceback
import warnings
from pathlib import Path

# OS errors a user's machine causes (a full or read-only disk, a quota, permissions): one line, not a traceback
USER_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT, errno.ENOTDIR,
               errno.EISDIR, errno.EIO)


def configure_logging(level: str = "INFO") -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO) if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party notices that our own logs replace (which fused paths are active is logged by model/train).
    for pattern in (".*Transformer Engine and Apex are not installed.*", ".*torch.distributed is disabled.*",
                    ".*TypedStorage is deprecated.*", ".*`torch_dtype` is deprecated.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("megatron").setLevel(logging.WARNING)  # its INFO dumps whole configs and parameter lists
    # a failed checkpoint write is reported by the trainer in one line (checkpoint.CheckpointManager._write_failure)
    logging.getLogger("megatron.core.dist_checkpointing.strategies.filesystem_async").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", module="torch.distributed.checkpoint")
    warnings.filterwarnings("ignore", module="megatron.core.dist_checkpointing")


def _say(message: str) -> None:
    """The one line (rank 0 only: every rank reaches the same error)."""
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"error: {message.strip().splitlines()[0] if message.strip() else message}", file=sys.stderr,
              flush=True)
    if os.environ.get("PREFIX_RFT_DEBUG"):
        traceback.print_exc()


def _user_error_types():
    from safetensors import SafetensorError

    from prefix_rft_megatron.config import ConfigError
    from prefix_rft_megatron.process.lock import OutputDirLocked

    return (ConfigError, ValueError, FileNotFoundError, FileExistsError, OutputDirLocked, SafetensorError)


def _describe(e: BaseException) -> str | None:
    """The one line for a user-caused error, None for a bug (which keeps its traceback)."""
    from prefix_rft_megatron.cli_errors import error_line

    if (isinstance(e, OSError) and e.errno in USER_ERRNOS) or isinstance(e, _user_error_types()):
        return error_line(e)
    return None


def _resume_hint(output_dir: str) -> str:
    from prefix_rft_megatron.train.checkpoint import CheckpointManager

    try:
        latest = CheckpointManager(Path(output_dir) / "checkpoints").latest()
    except ValueError:
        latest = None
    return (f"the last complete checkpoint is {latest}; run the same command to resume from it" if latest else
            "no checkpoint was written yet; the same command starts the run again")


def _check_before_launch(cfg, world_size: int) -> None:
    """What would fail on every rank after torchrun started them all: checked once, here."""
    from prefix_rft_megatron.config import check_training
    from prefix_rft_megatron.model.arch import ModelArch
    from prefix_rft_megatron.process.lock import OutputDirLock

    check_training(cfg, world_size)
    ModelArch.from_hf(cfg.model.hf_path).check_parallel(cfg.parallel.tp, cfg.parallel.pp,
                                                         where=f"{cfg.model.hf_path}/config.json")
    if Path(cfg.logging.output_dir).is_dir():
        OutputDirLock(cfg.logging.output_dir).check_free()


def main(argv: list[str] | None = None) -> int:
    from prefix_rft_megatron.config import ConfigError, load_config
    from prefix_rft_megatron.config.cli_args import split_config_args

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    files, overrides = split_config_args(argv)
    relaunch = "WORLD_SIZE" not in os.environ  # a plain process: torchrun with tp * pp processes below
    try:
        cfg = load_config(files, overrides)
        nproc = cfg.parallel.tp * cfg.parallel.pp if relaunch else 1
        if relaunch or int(os.environ.get("RANK", "0")) == 0:
            _check_before_launch(cfg, nproc if relaunch else int(os.environ["WORLD_SIZE"]))
    except ConfigError as e:
        _say(str(e))
        return 2
    except Exception as e:  # noqa: BLE001 - sorted into user errors (one line) and bugs (re-raised) by _describe
        if (line := _describe(e)) is None:
            raise
        _say(line)
        return 2
    configure_logging(cfg.logging.log_level)
    if relaunch and nproc > 1:
        from prefix_rft_megatron.process.signals import run_forwarding

        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "prefix_rft_megatron.cli", "train", *argv]
        return run_forwarding(cmd)
    from prefix_rft_megatron.process.signals import StopRequest, StopTraining
    from prefix_rft_megatron.train.loop import Trainer

    stop = StopRequest(announce=int(os.environ.get("RANK", "0")) == 0).install()
    trainer = None
    try:
        trainer = Trainer(cfg, stop=stop)
        trainer.run()
    except StopTraining as e:
        _say(f"stopped by {e}; {_resume_hint(cfg.logging.output_dir)}")
        return 128 + e.signum
    except KeyboardInterrupt:
        _say(f"stopped by SIGINT; {_resume_hint(cfg.logging.output_dir)}")
        return 130
    except Exception as e:  # noqa: BLE001 - see _describe
        if (line := _describe(e)) is None:
            raise
        _say(f"{line}; {_resume_hint(cfg.logging.output_dir)}" if trainer is not None else line)
        return 2
    finally:
        if trainer is not None:
            trainer.close()
    return 0
