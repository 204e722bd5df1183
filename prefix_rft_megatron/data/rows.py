"""Reading rows from JSONL and Parquet files, and turning one row into (id, problem, demonstration, answer) text.

Every problem a user's file can have is a `BadRow` naming the file and the 1-based row (the line number in JSONL),
e.g. `data: train.jsonl row 17: missing field 'answer'`. The caller decides whether it is fatal (`strict`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from prefix_rft_megatron.data.config import DataConfig

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")


class BadRow(ValueError):
    """A row of a data file that cannot be used; `str()` is the one-line report."""

    def __init__(self, file: str, row: int, reason: str, kind: str) -> None:
        super().__init__(f"data: {file} row {row}: {reason}")
        self.file, self.row, self.reason, self.kind = file, row, reason, kind


class _RowError(Exception):
    def __init__(self, reason: str, kind: str) -> None:
        super().__init__(reason)
        self.reason, self.kind = reason, kind


@dataclass(frozen=True)
class RawRow:
    """A row's file, 1-based row number, and its parsed object or the reason it could not be parsed."""

    file: str
    row: int
    obj: Any = None
    error: BadRow | None = None


def read_rows(path: Path, name: str) -> Iterator[RawRow]:
    """Rows of a JSONL or Parquet file, in order. `name` is how the file is called in messages."""
    suffix = path.suffix.lower()
    if path.is_dir():
        raise FileNotFoundError(f"data: {name}: is a directory, not a data file")
    if not path.is_file():
        raise FileNotFoundError(f"data: {name}: no such file")
    if suffix in PARQUET_SUFFIXES:
        yield from _read_parquet(path, name)
    elif suffix in JSONL_SUFFIXES:
        yield from _read_jsonl(path, name)
    else:
        raise ValueError(f"data: {name}: unknown file type {suffix!r} (expected .jsonl, .json or .parquet)")


def _read_jsonl(path: Path, name: str) -> Iterator[RawRow]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRow(name, lineno, error=BadRow(name, lineno, f"not UTF-8 (byte 0x{raw[e.start]:02x} at "
                                                                     f"column {e.start + 1})", "not_utf8"))
                continue
            if not line.strip():
                continue  # blank lines (a trailing newline, an editor's extra line) are not rows
            try:
                obj = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as e:
                yield RawRow(name, lineno, error=BadRow(name, lineno, f"not valid JSON ({e.msg} at column {e.colno})",
                                                        "bad_json"))
                continue
            yield RawRow(name, lineno, obj)


def _read_parquet(path: Path, name: str) -> Iterator[RawRow]:
    import pyarrow
    import pyarrow.parquet as pq

    row = 0
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
    except (pyarrow.ArrowException, OSError) as e:
        raise ValueError(f"data: {name}: not a readable Parquet file ({str(e).splitlines()[0]})") from None
    for batch in batches:
        for obj in batch.to_pylist():
            row += 1
            yield RawRow(name, row, obj)


def _get(obj: Any, dotted: str) -> Any:
    cur = obj
    for key in dotted.split("."):
        if not isinstance(cur, dict) or key not in cur or cur[key] is None:
            raise _RowError(f"missing field {dotted!r}", "missing_field")
        cur = cur[key]
    return cur


def _text(value: Any, field: str) -> str:
    if isinstance(value, bytes):  # a binary Parquet column
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _RowError(f"field {field!r} is not UTF-8 (byte 0x{value[e.start]:02x})", "not_utf8") from None
    if isinstance(value, dict) and "content" in value:  # a chat message
        value = value["content"]
    if isinstance(value, (int, float)) and not isinstance(value, bool):  # an answer stored as a number
        value = repr(value) if isinstance(value, float) else str(value)
    if not isinstance(value, str):
        raise _RowError(f"field {field!r} is {type(value).__name__}, expected text", "bad_type")
    return value


def _problem(value: Any, field: str) -> str:
    if isinstance(value, list):  # chat messages: the last user turn
        users = [m for m in value if isinstance(m, dict) and m.get("role") == "user"]
        if not users:
            raise _RowError(f"field {field!r} has no user message", "missing_field")
        value = users[-1]
    return _text(value, field)


def _demo(obj: Any, cfg: DataConfig) -> str:
    value = _get(obj, cfg.demo_field)
    if isinstance(value, list):
        if cfg.demo_correct_field:
            flags = _get(obj, cfg.demo_correct_field)
            picks = [i for i, ok in enumerate(flags or []) if ok is True and i < len(value)]
            if not picks:
                raise _RowError(f"no demonstration marked correct in {cfg.demo_correct_field!r}", "empty_demo")
            index = picks[0]
        else:
            index = cfg.demo_index
        if index >= len(value):
            raise _RowError(f"field {cfg.demo_field!r} has {len(value)} demonstrations, no index {index}",
                            "empty_demo")
        value = value[index]
    return _text(value, cfg.demo_field)


@dataclass(frozen=True)
class TextExample:
    id: str
    problem: str
    demo: str
    answer: str


def row_text(raw: RawRow, cfg: DataConfig) -> TextExample:
    """The text fields of a row, or BadRow."""
    if raw.error is not None:
        raise raw.error
    try:
        if not isinstance(raw.obj, dict):
            raise _RowError(f"row is a JSON {type(raw.obj).__name__}, expected an object", "bad_type")
        problem = _problem(_get(raw.obj, cfg.problem_field), cfg.problem_field)
        demo = _demo(raw.obj, cfg)
        answer = _get(raw.obj, cfg.answer_field)
        if isinstance(answer, list) and len(answer) == 1:  # verl: "ground_truth": ["72"]
            answer = answer[0]
        answer = _text(answer, cfg.answer_field)
        if not problem.strip():
            raise _RowError(f"empty problem {cfg.problem_field!r}", "empty_problem")
        if not demo.strip():
            raise _RowError(f"empty demonstration {cfg.demo_field!r}", "empty_demo")
        if not answer.strip():
            raise _RowError(f"empty answer {cfg.answer_field!r}", "empty_answer")
        try:
            id_ = _text(_get(raw.obj, cfg.id_field), cfg.id_field)
        except _RowError:
            id_ = f"{Path(raw.file).name}:{raw.row}"
    except _RowError as e:
        raise BadRow(raw.file, raw.row, e.reason, e.kind) from None
    return TextExample(id_, problem, demo, answer.strip())
