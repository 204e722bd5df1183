#!/usr/bin/env python
"""Megatron vs HF logits on the same tokens: `compare_logits.py --hf-dir DIR [--tp N] [--pp M]`. See --help."""
import sys

from prefix_rft_megatron.convert.compare import main

if __name__ == "__main__":
    sys.exit(main())
