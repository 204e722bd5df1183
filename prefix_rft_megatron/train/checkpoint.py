"""Training checkpoints: Megatron distributed checkpoints of model and optimizer, plus the loop's own state.

Layout: <output_dir>/checkpoints/step_000010/ (megatron-core files; common.pt holds step, data position, scheduler
and RNG states) and <output_dir>/checkpoints/latest (the name of the newest complete checkpoint).
Atomicity: a checkpoint is written into `step_N.partial` and renamed when every rank has finished, then `latest` is
replaced atomically. A crash or SIGKILL mid-save leaves a `.partial` directory that resume ignores and removes; the
previous checkpoint stays intact and `latest` still points at it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing

from prefix_rft_megatron.model.builder import unwrap_model

logger = logging.getLogger(__name__)
_STEP_DIR = re.compile(r"^step_(\d+)$")
# Optimizer state layout. dp_reshardable works on CPU and GPU and resumes with another DP size. Resuming with
# another TP/PP needs "fully_reshardable", whose loader in megatron-core 0.16 fails on the torch-Adam path
# (KeyError 'step' in _set_main_param_and_optimizer_states): not supported here yet.
_OPTIM_METADATA = {"distrib_optim_sharding_type": "dp_reshardable"}



def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def _init_empty_adam_state(optimizer) -> None:
    """Give a fresh optimizer Adam state (zeros, step 0) so that its sharded state dict can be built to load into.

    megatron-core's init_state_fn for torch Adam creates exp_avg/exp_avg_sq but no `step`, and the distributed
    optimizer's state_dict() asserts on it (the TE/apex path keeps step elsewhere). The load overwrites all of it.
    """
    for inner in _inner_optimizers(optimizer):
        for group in inner.param_groups:
            for p in group["params"]:
                state = inner.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                state.setdefault("step", torch.tensor(0.0))


def _inner_optimizers(optimizer):
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is not None:
            yield inner


def _restore_adam_steps(optimizer) -> None:
    """Give every parameter its own Adam `step`, equal to the count the checkpoint recorded.

    megatron-core 0.16's DistributedOptimizer on the torch-Adam path (no TE/apex) records the step in the param
    groups, but after load_state_dict the per-parameter `step` that torch Adam's bias correction reads was 0 here, and
    where it is restored it is ONE tensor shared by all parameters (torch increments it in place per parameter).
    Either way a resumed run would diverge from an uninterrupted one (tests/train/test_resume.py catches it).
    """
    for inner in _inner_optimizers(optimizer):
        for group in inner.param_groups:
            if "step" not in group:
                continue
            for p in group["params"]:
                if p in inner.state:
                    inner.state[p]["step"] = torch.tensor(float(group["step"]))


class CheckpointManager:
    def __init__(self, root: str | Path, keep_last: int = 3):
        self.root = Path(root)
        self.keep_last = keep_last

    def latest(self) -> Path | None:
        pointer = self.root / "latest"
        if not pointer.is_file():
            return None
        path = self.root / pointer.read_text().strip()
        return path if (path / "metadata.json").is_file() else None

    def clean_partial(self) -> None:
        if _is_rank0() and self.root.is_dir():
            for p in self.root.glob("*.partial"):
                logger.warning("checkpoint: removing incomplete %s (interrupted save)", p)
                shutil.rmtree(p, ignore_errors=True)
        _barrier()

    def save(self, step: int, model, optimizer, common: dict) -> Path:
        """Collective. `common` (plain Python/tensors, the same on every rank) goes to common.pt."""
        name = f"step_{step:06d}"
        final, tmp = self.root / name, self.root / f"{name}.partial"
        if _is_rank0():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        _barrier()
        model_sd = unwrap_model(model).sharded_state_dict()
        state = {
            "model": model_sd,
            "optimizer": optimizer.sharded_state_dict(model_sd, metadata=_OPTIM_METADATA),
            **common,
        }
        dist_checkpointing.save(state, str(tmp))
        if os.environ.get("PREFIX_RFT_TEST_SAVE_DELAY_S"):  # tests: hold the save open so a SIGKILL lands inside it
            import time

            time.sleep(float(os.environ["PREFIX_RFT_TEST_SAVE_DELAY_S"]))
        _barrier()
        if _is_rank0():
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            pointer_tmp = self.root / "latest.tmp"
            pointer_tmp.write_text(name)
            os.replace(pointer_tmp, self.root / "latest")
            self._prune()
        _barrier()
        return final

    def load(self, path: Path, model, optimizer) -> dict:
        """Collective: loads model and optimizer in place, returns the common state."""
        module = unwrap_model(model)
        _init_empty_adam_state(optimizer)
        model_sd = module.sharded_state_dict()
        request = {"model": model_sd,
                   "optimizer": optimizer.sharded_state_dict(model_sd, is_loading=True, metadata=_OPTIM_METADATA)}
        with torch.no_grad():  # distributed-optimizer state is copied into parameters' shards in place
            state = dist_checkpointing.load(request, str(path))
            module.load_state_dict(state.pop("model"), strict=False)
            optimizer.load_state_dict(state.pop("optimizer"))
        _restore_adam_steps(optimizer)
        return dist_checkpointing.load_common_state_dict(str(path))

    def _prune(self) -> None:
        steps = sorted((int(m.group(1)), p) for p in self.root.iterdir() if (m := _STEP_DIR.match(p.name)))
        for _, p in steps[: max(0, len(steps) - self.keep_last)]:
            shutil.rmtree(p, ignore_errors=True)
