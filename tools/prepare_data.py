"""Prepare a training file offline from an OpenR1-Math / LUFFY style source (JSONL or Parquet).

    python tools/prepare_data.py SOURCE [SOURCE ...] --output train.parquet [--layout openr1|luffy|plain]
        [--tokenizer DIR] [--strict] [--dedupe] [--limit N] [--set data.KEY=VALUE ...]

Reads each row's problem, demonstration and answer through the same code the trainer uses (`DataConfig` field names,
prompt template, token-length limits, bad-row reports), and writes the usable rows in the layout the trainer's
defaults read: `{"id", "problem", "solution", "answer", "prompt_tokens", "demo_tokens"}` (`.jsonl` or `.parquet`,
by the output's suffix). Nothing is downloaded: `--tokenizer` is a local directory (default: the bundled one; use the
policy's tokenizer so that the length limits mean what they say).

Layouts (presets for the field names; `--set` overrides any `DataConfig` field, e.g. `--set max_demo_tokens=8192`):
  plain   problem, solution, answer
  openr1  OpenR1-Math-220k: problem, answer; the first of `generations` marked true in `correctness_math_verify`
  luffy   LUFFY parquet: the user message of `prompt`, the assistant message of `target`, `reward_model.ground_truth`
If the source's problems already contain the instruction, add `--set 'prompt_template={problem}'` so that the length
filter sees the prompt the trainer will build.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from omegaconf import OmegaConf  # noqa: E402

from prefix_rft_megatron.data import (  # noqa: E402
    BadRow, DataConfig, LoadReport, PromptEncoder, iter_file, load_tokenizer,
)

LAYOUTS = {
    "plain": {},
    "openr1": {"demo_field": "generations", "demo_correct_field": "correctness_math_verify"},
    "luffy": {"problem_field": "prompt", "demo_field": "target", "answer_field": "reward_model.ground_truth"},
}


def build_config(layout: str, tokenizer: str | None, strict: bool, overrides: list[str]) -> DataConfig:
    base = OmegaConf.structured(DataConfig)
    preset = dict(LAYOUTS[layout], strict=strict, **({"tokenizer": tokenizer} if tokenizer else {}))
    dotlist = [o[len("data."):] if o.startswith("data.") else o for o in overrides]
    return OmegaConf.to_object(OmegaConf.merge(base, preset, OmegaConf.from_dotlist(dotlist)))


def prepare(sources: list[str], output: Path, cfg: DataConfig, dedupe: bool = False, limit: int = 0) -> dict:
    encoder = PromptEncoder(cfg, load_tokenizer(cfg.tokenizer))
    report = LoadReport()
    out, seen, duplicates = [], set(), 0
    for name in sources:
        for text, ex in iter_file(name, cfg, encoder, report):
            if dedupe:
                if text.problem in seen:
                    duplicates += 1
                    continue
                seen.add(text.problem)
            out.append({"id": text.id, "problem": text.problem, "solution": text.demo, "answer": text.answer,
                        "prompt_tokens": len(ex.prompt_ids), "demo_tokens": len(ex.demo_ids)})
            if limit and len(out) >= limit:
                break
        if limit and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"data: no usable rows in {sources}")
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() in (".parquet", ".pq"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(out), output)
    else:
        with open(output, "w", encoding="utf-8", newline="\n") as f:
            for row in out:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {
        "rows_read": report.rows, "written": len(out), "skipped": dict(report.skipped), "duplicates": duplicates,
        "prompt_tokens_mean": round(sum(r["prompt_tokens"] for r in out) / len(out), 1),
        "prompt_tokens_max": max(r["prompt_tokens"] for r in out),
        "demo_tokens_mean": round(sum(r["demo_tokens"] for r in out) / len(out), 1),
        "demo_tokens_max": max(r["demo_tokens"] for r in out),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sources", nargs="+", help=".jsonl/.json/.parquet files")
    ap.add_argument("--output", type=Path, required=True)
    ap.add_argument("--layout", choices=sorted(LAYOUTS), default="plain")
    ap.add_argument("--tokenizer", default=None, help="local tokenizer directory (default: the bundled one)")
    ap.add_argument("--strict", action="store_true", help="stop at the first bad row")
    ap.add_argument("--dedupe", action="store_true", help="keep only the first row of each problem text")
    ap.add_argument("--limit", type=int, default=0, help="write at most this many rows (0: all)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="DataConfig override in OmegaConf dotlist form (repeatable)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        cfg = build_config(args.layout, args.tokenizer, args.strict, args.overrides)
        summary = prepare(args.sources, args.output, cfg, args.dedupe, args.limit)
    except (BadRow, ValueError, FileNotFoundError) as e:  # a user's mistake: one line, no traceback
        key = getattr(e, "full_key", None)  # OmegaConf validation errors name the field here
        print((f"data.{key}: " if key else "") + str(e).splitlines()[0], file=sys.stderr)
        return 1
    print(f"{args.output}: " + json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
