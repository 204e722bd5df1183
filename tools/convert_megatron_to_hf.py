#!/usr/bin/env python
"""Megatron -> HF checkpoint conversion. See --help."""
import sys

from prefix_rft_megatron.convert.cli import megatron_to_hf_main

if __name__ == "__main__":
    sys.exit(megatron_to_hf_main())
