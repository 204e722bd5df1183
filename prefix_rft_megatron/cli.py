"""`prefix-rft`: the command line.

  prefix-rft show-config [CONFIG.yaml ...] [key=value ...]   print the merged config (--defaults: the schema's)
  prefix-rft convert hf-to-megatron|megatron-to-hf ...        checkpoint converters (same as tools/convert_*.py)
  prefix-rft compare-logits --hf-dir DIR [--tp N] [--pp M]    Megatron vs HF logits (same as tools/compare_logits.py)
  prefix-rft train [CONFIG.yaml ...] [key=value ...]          the Prefix-RFT training loop
  prefix-rft eval --hf-dir DIR [--bench FILE ...] [k=v ...]    avg@k / pass@k on benchmark files
  prefix-rft launch [--executor local|slurm] [--dryrun] CONF.yaml [k=v ...]   NeMo-Run (torchrun / Slurm)
  prefix-rft demo [--seeds 1,2,3] [--quick]                    the CPU demo: Prefix-RFT vs RFT vs SFT, table + plot
  prefix-rft demo-parity [--out DIR]                           HF <-> Megatron conversion and logits parity (~30 s)
"""

from __future__ import annotations

import sys


def show_config(args: list[str]) -> int:
    from prefix_rft_megatron.config import ConfigError, load_config, to_yaml
    from prefix_rft_megatron.config.cli_args import split_config_args

    if args == ["--defaults"]:
        args = []
    files, overrides = split_config_args(args)
    try:
        print(to_yaml(load_config(files, overrides)), end="")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "show-config":
        return show_config(rest)
    if cmd == "convert":
        from prefix_rft_megatron.convert.cli import hf_to_megatron_main, megatron_to_hf_main

        sub = {"hf-to-megatron": hf_to_megatron_main, "megatron-to-hf": megatron_to_hf_main}
        if not rest or rest[0] not in sub:
            print("usage: prefix-rft convert hf-to-megatron|megatron-to-hf [--help]", file=sys.stderr)
            return 2
        return sub[rest[0]](rest[1:])
    if cmd == "compare-logits":
        from prefix_rft_megatron.convert.compare import main as compare_main

        return compare_main(rest)
    if cmd == "train":
        from prefix_rft_megatron.train.cli import main as train_main

        return train_main(rest)
    if cmd == "eval":
        from prefix_rft_megatron.evaluation.cli import main as eval_main

        return eval_main(rest)
    if cmd == "launch":
        from prefix_rft_megatron.launch.cli import main as launch_main

        return launch_main(rest)
    if cmd == "demo":
        from prefix_rft_megatron.demo import main as demo_main

        return demo_main(rest)
    if cmd == "demo-parity":
        from prefix_rft_megatron.demo_parity import main as demo_parity_main

        return demo_parity_main(rest)
    print(f"error: unknown command {cmd!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
