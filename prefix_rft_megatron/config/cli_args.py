"""How every command splits its arguments: YAML files (in order) and `a.b=c` overrides."""

from __future__ import annotations

from typing import Sequence


def split_config_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    files = [a for a in args if a.endswith((".yaml", ".yml")) and "=" not in a]
    return files, [a for a in args if a not in files]
