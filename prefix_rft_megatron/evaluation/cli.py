"""`prefix-rft eval`: evaluate an HF checkpoint on benchmark files.

  prefix-rft eval --hf-dir DIR [--bench FILE ...] [--out results.json] [--tokenizer DIR] [CONFIG.yaml ...]
                  [key=value ...]

Overrides are the trainer's (`rollout.*`, `reward.*`, `data.prompt_template`, ...) plus `eval.*` (EvalConfig, e.g.
`eval.k=4 eval.max_new_tokens=512 eval.max_problems=20`). With `rollout.engine=hf` (default) the checkpoint's
weights go into a transformers model through `update_weights`, in buckets, the path the trainer's weight sync
uses; with `rollout.engine=sglang` the launched servers load DIR themselves (`rollout.model_path`), or attached
servers (`rollout.server_urls`) are evaluated with the weights they hold.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Iterator, List, Sequence, Tuple

def load_configs(files: Sequence[str], overrides: Sequence[str]):
    """(Config, its `eval` section)."""
    from prefix_rft_megatron.config import load_config

    cfg = load_config(files, overrides)
    return cfg, cfg.eval


def hf_weight_buckets(hf_dir: str | Path, max_bytes: int) -> Iterator[List[Tuple[str, "torch.Tensor"]]]:  # noqa: F821
    """The tensors of an HF safetensors directory as (name, tensor) buckets of at most `max_bytes` (a larger tensor
    goes alone), read one tensor at a time."""
    from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader
    from prefix_rft_megatron.rollout.weight_buckets import bucketize

    reader = HFCheckpointReader(hf_dir)
    yield from bucketize(((name, reader.get(name)) for name in sorted(reader.weight_map)), max_bytes)


def check_coverage(model, hf_dir: str | Path) -> None:
    """Every parameter of `model` must come from the checkpoint (a tied lm_head may be absent), or it would be
    evaluated with its random initial values."""
    from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader

    have = set(HFCheckpointReader(hf_dir).weight_map)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    missing = [n for n in model.state_dict() if n not in have and not (tied and n == "lm_head.weight")]
    if missing:
        raise ValueError(f"eval: {hf_dir}: checkpoint lacks {len(missing)} tensors of the model, e.g. {missing[:3]}")


def build_eval_engine(cfg, hf_dir: str):
    """The rollout engine `cfg.rollout.engine` names, holding the weights of `hf_dir`."""
    from prefix_rft_megatron.rollout import build_engine

    if cfg.rollout.engine == "hf":
        engine = build_engine(cfg.rollout, hf_dir)
        check_coverage(engine.model, hf_dir)
        engine.update_weights(hf_weight_buckets(hf_dir, cfg.rollout.weight_bucket_mib * 2**20), version=0)
        return engine
    if cfg.rollout.server_urls:
        logging.getLogger(__name__).warning(
            "eval: attaching to %s; they are evaluated with the weights they hold, not %s's",
            cfg.rollout.server_urls, hf_dir)
    else:  # launched servers load the checkpoint under evaluation (not model.hf_path, which a YAML may also set)
        cfg.rollout.model_path = str(hf_dir)
    return build_engine(cfg.rollout)


def _tokenizer_dir(hf_dir: Path, cfg) -> str:
    return str(hf_dir) if (hf_dir / "tokenizer_config.json").is_file() else cfg.data.tokenizer


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="prefix-rft eval", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hf-dir", required=True, help="HF checkpoint directory (config.json + safetensors)")
    p.add_argument("--bench", action="append", default=[],
                   help="benchmark file (repeatable; default: eval.benchmarks)")
    p.add_argument("--out", default="", help="results JSON (default: eval.output_path; empty: not written)")
    p.add_argument("--tokenizer", default="",
                   help="tokenizer directory (default: --hf-dir if it holds a tokenizer, else data.tokenizer)")
    p.add_argument("config", nargs="*", help="CONFIG.yaml files and key=value overrides")
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))

    from safetensors import SafetensorError

    from prefix_rft_megatron.cli_errors import error_line
    from prefix_rft_megatron.config import ConfigError
    from prefix_rft_megatron.data.tokenizer import load_tokenizer
    from prefix_rft_megatron.evaluation.evaluator import evaluate
    from prefix_rft_megatron.evaluation.report import format_table, write_json

    from prefix_rft_megatron.config.cli_args import split_config_args

    files, overrides = split_config_args(args.config)
    hf_dir = Path(args.hf_dir)
    try:
        cfg, ecfg = load_configs(files, overrides)
        if not (hf_dir / "config.json").is_file():
            raise ConfigError(f"eval: --hf-dir {hf_dir}: no config.json")
        tokenizer = load_tokenizer(args.tokenizer or _tokenizer_dir(hf_dir, cfg))
        engine = build_eval_engine(cfg, str(hf_dir))
    except (ConfigError, OSError, ValueError, KeyError, SafetensorError) as e:
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    try:
        results = evaluate(engine, tokenizer, args.bench or ecfg.benchmarks, ecfg, cfg.data, cfg.reward,
                           stop_token_ids=cfg.rollout.stop_token_ids)
    except (FileNotFoundError, ValueError) as e:  # a missing or bad benchmark file
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        engine.shutdown()
    results["checkpoint"] = str(hf_dir)
    print(format_table(results))
    out = args.out or ecfg.output_path
    if out:
        print(f"results: {write_json(results, out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
