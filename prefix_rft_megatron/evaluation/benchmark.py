"""Benchmark files: one problem a row (`problem`, `answer` by default), read with the data stage's row reader.

A bad row is fatal here (an evaluation silently scored on fewer problems would not be comparable), reported in
one line with the file and the row.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Tuple

from prefix_rft_megatron.data.config import resolve_path
from prefix_rft_megatron.data.rows import BadRow, read_rows


@dataclass(frozen=True)
class Benchmark:
    name: str  # the file's stem, e.g. "aime24"
    path: str  # as given (a `bundled:` path stays one)
    problems: Tuple[str, ...]
    answers: Tuple[str, ...]


def _field(obj: Any, dotted: str, file: str, row: int) -> str:
    cur = obj
    for key in dotted.split("."):
        if not isinstance(cur, dict) or cur.get(key) is None:
            raise BadRow(file, row, f"missing field {dotted!r}", "missing_field")
        cur = cur[key]
    if isinstance(cur, list) and len(cur) == 1:  # verl-style ["72"]
        cur = cur[0]
    if isinstance(cur, (int, float)) and not isinstance(cur, bool):
        cur = str(cur)
    if not isinstance(cur, str) or not cur.strip():
        raise BadRow(file, row, f"field {dotted!r} is {type(cur).__name__} {cur!r:.40}, expected non-empty text",
                     "bad_type")
    return cur


def load_benchmark(path: str, problem_field: str = "problem", answer_field: str = "answer",
                   max_problems: int = 0) -> Benchmark:
    """The first `max_problems` rows (0: all) of a benchmark file."""
    problems: List[str] = []
    answers: List[str] = []
    for raw in read_rows(resolve_path(path), path):
        if raw.error is not None:
            raise raw.error
        problems.append(_field(raw.obj, problem_field, raw.file, raw.row))
        answers.append(_field(raw.obj, answer_field, raw.file, raw.row).strip())
        if max_problems and len(problems) >= max_problems:
            break
    if not problems:
        raise ValueError(f"eval: {path}: no problems")
    return Benchmark(Path(path.split(":", 1)[-1]).stem, path, tuple(problems), tuple(answers))
