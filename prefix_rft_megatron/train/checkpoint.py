"""Training checkpoints: Megatron distributed checkpoints of model and optimizer, plus the loop's own state.

Layout: <output_dir>/checkpoints/step_000010/ (megatron-core files; common.pt holds step, data position, scheduler
and RNG states, and `checkpoint_layout`: the TP/PP/DP layout and optimizer format it was written with) and
<output_dir>/checkpoints/latest (the name of the newest complete checkpoint).
Atomicity: a checkpoint is written into `step_N.partial` and renamed when every rank has finished, then `latest` is
replaced atomically. A crash or SIGKILL mid-save leaves a `.partial` directory that resume ignores and removes; the
previous checkpoint stays intact and `latest` still points at it. The save is megatron's torch_dist strategy run
through `model.dist_save`: no multiprocessing Manager, and its writer processes die with the trainer, so a SIGKILL
leaves no process behind.

Another TP/PP/DP layout: the model's tensors are saved in model space (global shapes) and load at any TP/PP. The
distributed optimizer's state is saved in megatron-core's "fully_reshardable" format by default
(`checkpoint.optimizer_format`): per parameter, the fp32 main weight, exp_avg and exp_avg_sq in the parameter's
global shape, so a run resumes at any TP/PP/DP with its Adam state, exactly (the load is a copy). The price is host
memory: a save gathers each DP group's optimizer shards into the CPU memory of its DP rank 0 (3 fp32 copies of that
rank's TP/PP share of the model), and a load reads that whole TP/PP share on every rank before keeping its DP slice.
"dp_reshardable" writes each DP rank's flat buffers as they are (no gather) but resumes only at the same TP/PP (any
DP); resuming it at another TP/PP stops at start-up with one line. The format is recorded in the checkpoint and load
reads each checkpoint in its own format, whatever the current setting. The vocabulary is padded per TP
(make_vocab_size_divisible_by x TP): where two layouts pad it differently, load stops with one line saying what to
set. The non-distributed optimizer (parallel.use_distributed_optimizer=false) keeps Adam state per parameter in model
space, any layout.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer
from torch.distributed.checkpoint.api import CheckpointException

from prefix_rft_megatron.compat.megatron_optimizer import (
    fully_reshardable_load_keeps_step,
    init_empty_adam_state,
    restore_adam_steps,
)
from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader
from prefix_rft_megatron.model.builder import unwrap_model
from prefix_rft_megatron.checkpoint_io.dist_save import save_sharded_atomically
from prefix_rft_megatron.model.load import CheckpointLayoutError, check_vocab_padding
from prefix_rft_megatron.train.config import OPTIMIZER_FORMATS
from prefix_rft_megatron.parallel import collectives

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
_LAYOUT_KEY = "checkpoint_layout"  # in common.pt: {"optimizer_format", "tp", "pp", "dp"}
_LEGACY_FORMAT = "dp_reshardable"  # checkpoints written before the layout was recorded


def _optim_metadata(fmt: str) -> dict:
    # mem_efficient: a fully_reshardable save gathers each DP group's state over gloo into DP rank 0's CPU memory
    # only; without it every DP rank gets all of it, which pays off only with a fully parallel save strategy (not
    # used here). Load is the same either way.
    return {"distrib_optim_sharding_type": fmt, "distrib_optim_fully_reshardable_mem_efficient": True}


def _recorded_format(optimizer, fmt: str) -> str:
    """The distributed optimizer's format, or "per_parameter" for megatron's other optimizers (model space)."""
    chain = getattr(optimizer, "chained_optimizers", [optimizer])
    distributed = any(isinstance(o, DistributedOptimizer) for o in chain)
    return fmt if distributed else "per_parameter"


def _current_layout() -> dict:
    return {"tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size(),
            "dp": parallel_state.get_data_parallel_world_size()}


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _test_save_delay(partial: Path) -> None:
    """Tests set PREFIX_RFT_TEST_SAVE_DELAY_S to hold a save open (written, not yet renamed) so a SIGKILL lands in it."""
    if os.environ.get("PREFIX_RFT_TEST_SAVE_DELAY_S"):
        import time

        time.sleep(float(os.environ["PREFIX_RFT_TEST_SAVE_DELAY_S"]))


def _barrier() -> None:
    if dist.is_initialized():
        collectives.barrier()


def read_sharded(request: dict, path: Path) -> dict:
    """dist_checkpointing.load, with a damaged checkpoint (a truncated or missing shard file) reported in one line."""
    try:
        return dist_checkpointing.load(request, str(path))
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - CheckpointException is a BaseException
        last = [line for line in str(e).strip().splitlines() if line.strip()]
        raise CheckpointLayoutError(
            f"{path}: cannot be read, a file of it is damaged or missing ({type(e).__name__}: "
            f"{last[-1][:160] if last else ''}); point checkpoints/latest at an earlier checkpoint, or start over with "
            "checkpoint.overwrite=true") from None


class CheckpointManager:
    def __init__(self, root: str | Path, keep_last: int = 3, optimizer_format: str = "fully_reshardable"):
        assert optimizer_format in OPTIMIZER_FORMATS, optimizer_format  # CheckpointConfig checks what users set
        self.root = Path(root)
        self.keep_last = keep_last
        self.optimizer_format = optimizer_format

    @staticmethod
    def is_complete(path: Path) -> bool:
        """A finished save: renamed from .partial, with megatron's metadata and the common state."""
        return _STEP_DIR.match(path.name) is not None and (path / "metadata.json").is_file() and (
            path / "common.pt").is_file()

    def complete(self) -> list[Path]:
        """Complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name))]
        return [p for _, p in sorted(found) if self.is_complete(p)]

    def latest(self) -> Path | None:
        """The checkpoint to resume from: the one `latest` names; if that is missing or incomplete (deleted by hand,
        a lost disk), the newest complete one, with a warning. None when there is none."""
        pointer = self.root / "latest"
        done = self.complete()
        if not pointer.is_file():
            return done[-1] if done else None
        path = self.root / pointer.read_text().strip()
        if self.is_complete(path):
            return path
        if done:
            if _is_rank0():
                logger.warning("checkpoint: %s names %s, which is missing or incomplete; resuming from %s, the newest "
                               "complete checkpoint", pointer, path.name, done[-1].name)
            return done[-1]
        raise CheckpointLayoutError(f"{pointer} names {path.name}, which is missing or incomplete, and no complete "
                                    f"checkpoint is left in {self.root}; restore it, or start over with "
                                    "checkpoint.overwrite=true")

    def clean_partial(self) -> None:
        if _is_rank0() and self.root.is_dir():
            for p in self.root.glob("*.partial"):
                logger.warning("checkpoint: removing incomplete %s (interrupted save)", p)
                shutil.rmtree(p, ignore_errors=True)
        _barrier()

    def save(self, step: int, model, optimizer, common: dict) -> Path:
        """Collective. `common` (plain Python/tensors, the same on every rank) goes to common.pt."""
        name = f"step_{step:06d}"
        model_sd = unwrap_model(model).sharded_state_dict()
        optim_sd = optimizer.sharded_state_dict(model_sd, metadata=_optim_metadata(self.optimizer_format))
        # mem-efficient fully_reshardable: DP ranks > 0 hold no optimizer tensors (param_state None); without the key
        # their common state matches rank 0's (megatron warns on every save otherwise).
        for sd in (optim_sd, *(v for v in optim_sd.values() if isinstance(v, dict))):
            if "param_state" in sd and sd["param_state"] is None:
                del sd["param_state"]
        state = {
            "model": model_sd,
            "optimizer": optim_sd,
            **common,
            _LAYOUT_KEY: {"optimizer_format": _recorded_format(optimizer, self.optimizer_format),
                          **_current_layout()},
        }
        # megatron's torch_dist save (minus its Manager process) into step_N.partial, renamed when all ranks are done
        try:
            final = save_sharded_atomically(state, self.root / name, self.root / f"{name}.partial", _test_save_delay)
        except (Exception, CheckpointException) as e:  # noqa: BLE001 - CheckpointException is a BaseException
            raise self._write_failure(name, e) from None
        if _is_rank0():
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(name)
            os.replace(pointer_tmp, self.root / "latest")
            self._prune()
        _barrier()
        return final

    def _write_failure(self, name: str, error: BaseException) -> OSError:
        """One OSError for a save that failed (megatron reports a full disk as a worker failure with torch.save's
        'unexpected pos'): ENOSPC when the disk is (nearly) full, EIO otherwise; the torn .partial is removed."""
        if _is_rank0():
            shutil.rmtree(self.root / f"{name}.partial", ignore_errors=True)
        done = self.complete()
        usage = shutil.disk_usage(self.root)
        previous = sum(f.stat().st_size for f in done[-1].rglob("*") if f.is_file()) if done else 0
        if usage.free < max(previous, 64 * 2**20):
            return OSError(errno.ENOSPC, f"writing checkpoint {name} ran out of disk space ({usage.free / 2**20:.0f} "
                                         f"MiB free in {self.root})")
        first = str(error).strip().splitlines()
        return OSError(errno.EIO, f"writing checkpoint {name} failed ({type(error).__name__}: "
                                  f"{first[-1][:200] if first else ''})")

    def load(self, path: Path, model, optimizer, vocab_size: int | None = None) -> dict:
        """Collective: loads model and optimizer in place at this run's TP/PP/DP, returns the common state.

        Raises CheckpointLayoutError (one line) when the checkpoint cannot be resumed at this layout; `vocab_size`
        (unpadded) only lets that message say which make_vocab_size_divisible_by fits."""
        module = unwrap_model(model)
        common = dist_checkpointing.load_common_state_dict(str(path))
        saved = common.get(_LAYOUT_KEY) or {}
        fmt = saved.get("optimizer_format", _LEGACY_FORMAT)
        now = _current_layout()
        if saved and (fmt == "per_parameter") != (_recorded_format(optimizer, fmt) == "per_parameter"):
            raise CheckpointLayoutError(
                f"{path}: saved with parallel.use_distributed_optimizer={fmt != 'per_parameter'}; resume with the same")
        if fmt == "dp_reshardable" and saved and (saved["tp"], saved["pp"]) != (now["tp"], now["pp"]):
            raise CheckpointLayoutError(
                f"{path}: optimizer state saved as dp_reshardable at TP={saved['tp']} PP={saved['pp']} resumes only "
                f"at that TP/PP (this run: TP={now['tp']} PP={now['pp']}); resume there, or save with "
                "checkpoint.optimizer_format=fully_reshardable")
        check_vocab_padding(module, CheckpointReader(path), vocab_size)
        if saved and any(saved[k] != now[k] for k in now) and _is_rank0():
            logger.info("checkpoint: resharding %s from TP=%d PP=%d DP=%d to TP=%d PP=%d DP=%d", path.name,
                        saved["tp"], saved["pp"], saved["dp"], now["tp"], now["pp"], now["dp"])
        init_empty_adam_state(optimizer)
        model_sd = module.sharded_state_dict()
        metadata = _optim_metadata(fmt if fmt in OPTIMIZER_FORMATS else self.optimizer_format)
        request = {"model": model_sd,
                   "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=metadata)}
        with torch.no_grad():  # distributed-optimizer state is copied into parameters' shards in place
            state = read_sharded(request, path)
            module.load_state_dict(state.pop("model"), strict=False)
            with fully_reshardable_load_keeps_step(optimizer):
                optimizer.load_state_dict(state.pop("optimizer"))
        restore_adam_steps(optimizer)
        return common

    def _prune(self) -> None:
        """Delete all but the newest `keep_last` (>= 1) checkpoints; never the one `latest` names."""
        steps = sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)))
        keep = (self.root / "latest").read_text().strip() if (self.root / "latest").is_file() else ""
        for _, p in steps[: max(0, len(steps) - max(1, self.keep_last))]:
            if p.name != keep:
                shutil.rmtree(p, ignore_errors=True)
