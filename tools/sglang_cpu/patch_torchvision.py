"""Guard two lines of torchvision's `_meta_registrations.py` for the CPU test harness of tools/sglang_cpu.

The torchvision wheel on PyPI that matches torch 2.13 is a CUDA build: on a CPU-only machine its C extension does
not load, so the `torchvision::nms` / `torchvision::qnms` operators it would define do not exist, and the two
`torch.library.register_fake` decorators for them raise at import (sglang imports torchvision at start-up). The
guard skips a fake registration whose operator does not exist. Idempotent; run by build_env.sh only.
"""

import importlib.util
import sys
from pathlib import Path

MARK = "# guard added by prefix_rft_megatron tools/sglang_cpu/patch_torchvision.py (CPU test harness)"
GUARD = f'''{MARK}
def _register_fake_if_defined(op):
    def wrap(fn):
        try:
            return torch.library.register_fake(op)(fn)
        except RuntimeError:  # the operator is not defined: torchvision's C extension did not load
            return fn
    return wrap


'''


def main() -> None:
    path = Path(importlib.util.find_spec("torchvision").origin).parent / "_meta_registrations.py"
    text = path.read_text()
    if MARK in text:
        return
    for op in ("torchvision::nms", "torchvision::qnms"):
        old = f'@torch.library.register_fake("{op}")'
        if old not in text:
            sys.exit(f"{path}: {old} not found (another torchvision release?)")
        text = text.replace(old, f'@_register_fake_if_defined("{op}")')
    anchor = "@functools.lru_cache(None)\ndef get_meta_lib():"
    if anchor not in text:
        sys.exit(f"{path}: {anchor!r} not found (another torchvision release?)")
    path.write_text(text.replace(anchor, GUARD + anchor, 1))
    print(f"patched {path}")


if __name__ == "__main__":
    main()
