"""`prefix-rft train CONFIG.yaml ... [key=value ...]`: run the training loop.

Under torchrun it runs as is; launched as a plain process with parallel.tp * parallel.pp > 1, it relaunches itself
under `torchrun --standalone` with that many processes (data parallel size 1).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings


def configure_logging(level: str = "INFO") -> None:
    rank = int(os.environ.get("RANK", "0"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO) if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # Third-party notices that our own logs replace (which fused paths are active is logged by model/train).
    for pattern in (".*Transformer Engine and Apex are not installed.*", ".*torch.distributed is disabled.*",
                    ".*TypedStorage is deprecated.*", ".*`torch_dtype` is deprecated.*"):
        warnings.filterwarnings("ignore", message=pattern)
    logging.getLogger("megatron").setLevel(logging.WARNING)  # its INFO dumps whole configs and parameter lists
    warnings.filterwarnings("ignore", module="torch.distributed.checkpoint")
    warnings.filterwarnings("ignore", module="megatron.core.dist_checkpointing")


def main(argv: list[str] | None = None) -> int:
    from prefix_rft_megatron.cli import _split_config_args
    from prefix_rft_megatron.config import ConfigError, check_training, load_config

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    files, overrides = _split_config_args(argv)
    nproc_relaunch = None
    try:
        cfg = load_config(files, overrides)
        if "WORLD_SIZE" not in os.environ:  # a plain process: relaunched below with tp * pp processes
            nproc_relaunch = cfg.parallel.tp * cfg.parallel.pp
        check_training(cfg, int(os.environ.get("WORLD_SIZE", nproc_relaunch or 1)))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    configure_logging(cfg.logging.log_level)
    nproc = nproc_relaunch or 1
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
               "-m", "prefix_rft_megatron.cli", "train", *argv]
        return subprocess.call(cmd)
    from prefix_rft_megatron.train.loop import Trainer

    try:
        trainer = Trainer(cfg)
    except (ValueError, FileNotFoundError) as e:  # user-caused set-up errors: one line (bad data, paths, layout)
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    trainer.run()
    return 0
