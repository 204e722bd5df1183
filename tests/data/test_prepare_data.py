"""tools/prepare_data.py: a LUFFY-layout Parquet source becomes a file the trainer's defaults read, with the same
token ids as reading the source directly."""

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prefix_rft_megatron.data import DataConfig, PromptDataset

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("prepare_data", REPO / "tools" / "prepare_data.py")
prepare_data = importlib.util.module_from_spec(spec)
spec.loader.exec_module(prepare_data)


def luffy_row(i, demo=None):
    return {"prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": f"What is {i} + 1?"}],
            "target": [{"role": "assistant",
                        "content": demo if demo is not None else f"{i} + 1 = {i + 1}. \\boxed{{{i + 1}}}"}],
            "reward_model": {"style": "rule", "ground_truth": str(i + 1)}}


def test_luffy_source_to_training_file(tmp_path, capsys, tokenizer):
    rows = [luffy_row(i) for i in range(20)] + [luffy_row(99, demo=""), luffy_row(3)]  # a bad row, a duplicate
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "src.parquet")
    out = tmp_path / "train.jsonl"
    rc = prepare_data.main([str(tmp_path / "src.parquet"), "--output", str(out), "--layout", "luffy", "--dedupe"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.split(": ", 1)[1])
    assert summary["rows_read"] == 22 and summary["written"] == 20 and summary["skipped"] == {"empty_demo": 1}
    assert summary["duplicates"] == 1
    luffy = prepare_data.build_config("luffy", None, False, [])
    direct = PromptDataset.from_files([str(tmp_path / "src.parquet")], luffy, tokenizer)
    prepared = PromptDataset.from_files([str(out)], DataConfig(), tokenizer)
    key = lambda e: (e.prompt_ids, e.demo_ids, e.answer)  # noqa: E731
    assert [key(e) for e in prepared] == [key(e) for e in direct][:20]
    assert [e.id for e in prepared][:2] == ["src.parquet:1", "src.parquet:2"]
    assert json.loads(out.read_text().splitlines()[0])["demo_tokens"] == len(direct[0].demo_ids)


def test_strict_and_bad_override_fail_with_one_line(tmp_path, capsys):
    (tmp_path / "bad.jsonl").write_text('{"problem": "x", "answer": "1"}\n')
    rc = prepare_data.main([str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o.jsonl"), "--strict"])
    assert rc == 1
    assert capsys.readouterr().err == f"data: {tmp_path / 'bad.jsonl'} row 1: missing field 'solution'\n"
    rc = prepare_data.main([str(tmp_path / "bad.jsonl"), "--output", str(tmp_path / "o.jsonl"),
                            "--set", "max_demo_tokens=lots"])
    assert rc == 1 and capsys.readouterr().err.startswith("data.max_demo_tokens: Value 'lots'")
    assert not (tmp_path / "o.jsonl").exists()
