#!/usr/bin/env python
"""HF -> Megatron checkpoint conversion. See --help."""
import sys

from prefix_rft_megatron.convert.cli import hf_to_megatron_main

if __name__ == "__main__":
    sys.exit(hf_to_megatron_main())
