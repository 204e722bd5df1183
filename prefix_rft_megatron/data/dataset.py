"""The training set as token ids: per example the prompt ids, the demonstration ids (ending with eos), the answer
string and an id. Bad rows are reported with file and row, skipped (counted in the log) or fatal (`strict`)."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

from prefix_rft_megatron.data.config import DataConfig, resolve_path
from prefix_rft_megatron.data.rows import BadRow, TextExample, read_rows, row_text
from prefix_rft_megatron.data.tokenizer import PromptEncoder, load_tokenizer
from prefix_rft_megatron.reward.answer import gold_answer_problem

logger = logging.getLogger(__name__)

_CHUNK = 512  # rows tokenized together (the fast tokenizer batches in Rust)
_LOGGED_PER_FILE = 10  # individual bad-row lines per file before only the count is logged


@dataclass(frozen=True)
class Example:
    id: str
    prompt_ids: tuple[int, ...]
    """Prompt template (or chat template) applied, tokenized."""
    demo_ids: tuple[int, ...]
    """The demonstration, tokenized, ending with the eos id."""
    answer: str
    """Ground-truth final answer, for the reward."""


@dataclass
class LoadReport:
    rows: int = 0
    kept: int = 0
    skipped: collections.Counter = field(default_factory=collections.Counter)
    """Bad rows skipped, by kind: not_utf8, bad_json, bad_type, missing_field, empty_problem, empty_demo,
    empty_answer, bad_answer, prompt_too_long, demo_too_long."""
    messages: list[str] = field(default_factory=list)
    """The one-line report of every skipped row."""


class PromptDataset(Sequence[Example]):
    """Examples in file order. Build with `from_config` or `from_files`."""

    def __init__(self, examples: list[Example], report: LoadReport, encoder: PromptEncoder) -> None:
        self.examples = examples
        self.report = report
        self.encoder = encoder

    @classmethod
    def from_config(cls, cfg: DataConfig, split: str = "train", tokenizer=None,
                    max_answer_chars: int = 1000) -> "PromptDataset":
        """The training set (`data.train_files`). Held-out problems are `eval.benchmarks`, read by
        `evaluation.load_benchmark`; `from_files` builds a dataset of any files. `max_answer_chars`: the reward's
        bound (reward.max_answer_chars), which gold answers must keep too."""
        if split != "train":
            raise ValueError(f"data: split {split!r}: only 'train' (held-out problems are eval.benchmarks)")
        return cls.from_files(cfg.train_files, cfg, tokenizer, max_answer_chars)

    @classmethod
    def from_files(cls, files: Iterable[str], cfg: DataConfig, tokenizer=None,
                   max_answer_chars: int = 1000) -> "PromptDataset":
        files = list(files)
        encoder = PromptEncoder(cfg, tokenizer if tokenizer is not None else load_tokenizer(cfg.tokenizer))
        report = LoadReport()
        examples: list[Example] = []
        for name in files:
            examples += [ex for _, ex in iter_file(name, cfg, encoder, report, max_answer_chars)]
        if not examples:
            raise ValueError(f"data: no usable rows in {files} ({report.rows} rows, skipped {dict(report.skipped)})")
        return cls(examples, report, encoder)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i):  # type: ignore[override]
        return self.examples[i]

    def batch(self, indices: Sequence[int]) -> list[Example]:
        return [self.examples[i] for i in indices]


def iter_file(name: str, cfg: DataConfig, encoder: PromptEncoder, report: LoadReport | None = None,
              max_answer_chars: int = 1000) -> Iterator[tuple[TextExample, Example]]:
    """The usable rows of one file as (text, token ids), in order; bad rows are raised (strict) or counted and
    logged. Used by the dataset and by `tools/prepare_data.py`."""
    report = report if report is not None else LoadReport()
    skipped: collections.Counter = collections.Counter()  # this file's bad rows by kind
    kept = 0
    chunk: list[tuple[str, int, TextExample] | BadRow] = []  # in row order, so reports come in row order

    def bad(err: BadRow) -> None:
        if cfg.strict:
            raise err
        skipped[err.kind] += 1
        report.skipped[err.kind] += 1
        report.messages.append(str(err))
        if sum(skipped.values()) <= _LOGGED_PER_FILE:
            logger.warning("%s (skipped)", err)

    def flush() -> Iterator[tuple[TextExample, Example]]:
        texts = [c for c in chunk if not isinstance(c, BadRow)]
        prompts = iter(encoder.encode_prompts([t.problem for _, _, t in texts]) if texts else [])
        demos = iter(encoder.encode_demos([t.demo for _, _, t in texts]) if texts else [])
        for item in chunk:
            if isinstance(item, BadRow):
                bad(item)
                continue
            (file, row, text), p, d = item, next(prompts), next(demos)
            if len(p) > cfg.max_prompt_tokens:
                bad(BadRow(file, row, f"prompt is {len(p)} tokens, over max_prompt_tokens={cfg.max_prompt_tokens}",
                           "prompt_too_long"))
            elif cfg.max_demo_tokens and len(d) > cfg.max_demo_tokens:  # 0: not derived (no rollout config)
                bad(BadRow(file, row, f"demonstration is {len(d)} tokens, over max_demo_tokens={cfg.max_demo_tokens}",
                           "demo_too_long"))
            else:
                yield text, Example(text.id, tuple(p), tuple(d), text.answer)
        chunk.clear()

    for raw in read_rows(resolve_path(name), name):
        report.rows += 1
        try:
            text = row_text(raw, cfg)
            if (problem := gold_answer_problem(text.answer, max_answer_chars)) is not None:
                raise BadRow(raw.file, raw.row, problem, "bad_answer")
            chunk.append((raw.file, raw.row, text))
        except BadRow as err:
            chunk.append(err)
        if len(chunk) >= _CHUNK:
            for item in flush():
                kept += 1
                yield item
    for item in flush():
        kept += 1
        yield item
    report.kept += kept
    if skipped:
        logger.warning("data: %s: skipped %d bad rows, kept %d (%s)", name, sum(skipped.values()), kept,
                       ", ".join(f"{k}: {v}" for k, v in sorted(skipped.items())))
    else:
        logger.info("data: %s: %d rows", name, kept)
