"""Command lines of the checkpoint converters (tools/convert_*.py and `prefix-rft convert ...`)."""

from __future__ import annotations

import argparse
import logging
import sys

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def _fail(err: BaseException) -> int:
    from prefix_rft_megatron.cli_errors import error_line

    print(f"error: {error_line(err)}", file=sys.stderr)
    return 2


def _user_errors() -> tuple:
    """What a user's files can make the converters raise: one line each, not a traceback."""
    from safetensors import SafetensorError
    from torch.distributed.checkpoint.api import CheckpointException

    return (ValueError, OSError, KeyError, SafetensorError, CheckpointException)


def hf_to_megatron_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="convert_hf_to_megatron",
                                description="HF safetensors directory -> Megatron distributed checkpoint (streamed)")
    p.add_argument("--hf-dir", required=True)
    p.add_argument("--out", required=True, help="output checkpoint directory (written atomically)")
    p.add_argument("--tp", type=int, default=1, help="TP size the checkpoint is padded for (vocab padding)")
    p.add_argument("--pp", type=int, default=1, help="PP size to validate against the layer count")
    p.add_argument("--make-vocab-size-divisible-by", type=int, default=128)
    p.add_argument("--dtype", choices=list(_DTYPES), default=None, help="cast weights (default: keep)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

    try:
        convert_hf_to_megatron(args.hf_dir, args.out, tp=args.tp, pp=args.pp,
                               make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
                               dtype=getattr(torch, args.dtype) if args.dtype else None, overwrite=args.overwrite)
    except _user_errors() as e:
        return _fail(e)
    return 0


def megatron_to_hf_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="convert_megatron_to_hf",
                                description="Megatron distributed checkpoint -> HF safetensors directory (streamed)")
    p.add_argument("--ckpt", required=True, help="Megatron checkpoint directory")
    p.add_argument("--out", required=True, help="output HF directory (written atomically)")
    p.add_argument("--hf-config", default=None, help="HF dir with config.json/tokenizer if the checkpoint has none")
    p.add_argument("--max-shard-size-gb", type=float, default=5.0)
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf

    try:
        convert_megatron_to_hf(args.ckpt, args.out, hf_config_dir=args.hf_config,
                               max_shard_bytes=int(args.max_shard_size_gb * 2**30), overwrite=args.overwrite)
    except _user_errors() as e:
        return _fail(e)
    return 0
