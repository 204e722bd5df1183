"""Bad rows: each kind reported with its file and row, skipped and counted by default, fatal when strict;
JSONL and Parquet give the same examples; the OpenR1-Math and LUFFY layouts through field names."""

import json
import logging

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prefix_rft_megatron.data import DEFAULT_PROMPT_TEMPLATE, BadRow, DataConfig, PromptDataset, load_tokenizer

GOOD = {"id": "g1", "problem": "What is 2 + 3?", "solution": "2 + 3 = 5. \\boxed{5}", "answer": "5"}
LONG_DEMO = "1 + 1 = 2. " * 20 + "\\boxed{2}"
LONG_PROBLEM = "What is " + " + ".join(["12"] * 10) + "?"
# Token counts computed here, independently of the loader: demonstration + eos, bos + prompt.
_TOK = load_tokenizer()
N_LONG_DEMO = len(_TOK.encode(LONG_DEMO, add_special_tokens=False)) + 1
N_LONG_PROMPT = len(_TOK.encode(DEFAULT_PROMPT_TEMPLATE.replace("{problem}", LONG_PROBLEM)))


def good(i):
    return dict(GOOD, id=f"g{i}", problem=f"What is {i} + 3?", solution=f"{i} + 3 = {i + 3}. \\boxed{{{i + 3}}}",
                answer=str(i + 3))


def write_lines(path, lines):
    with open(path, "wb") as f:
        for line in lines:
            f.write(line if isinstance(line, bytes) else (line + "\n").encode())


CFG = DataConfig(max_prompt_tokens=40, max_demo_tokens=40)

# (line, expected message after "data: train.jsonl row N: ", kind)
BAD_LINES = [
    (json.dumps({k: v for k, v in GOOD.items() if k != "answer"}), "missing field 'answer'", "missing_field"),
    (json.dumps(dict(GOOD, solution="")), "empty demonstration 'solution'", "empty_demo"),
    (json.dumps(dict(GOOD, solution="   \n")), "empty demonstration 'solution'", "empty_demo"),
    ('{"problem": "What is 2 + 3?", "solution": ', "not valid JSON (Expecting value at column 43)", "bad_json"),
    (b'{"problem": "caf\xe9", "solution": "x", "answer": "1"}\n', "not UTF-8 (byte 0xe9 at column 17)", "not_utf8"),
    (json.dumps(dict(GOOD, solution=LONG_DEMO)), f"demonstration is {N_LONG_DEMO} tokens, over max_demo_tokens=40",
     "demo_too_long"),
    (json.dumps(dict(GOOD, problem=LONG_PROBLEM)), f"prompt is {N_LONG_PROMPT} tokens, over max_prompt_tokens=40",
     "prompt_too_long"),
    ("[1, 2, 3]", "row is a JSON list, expected an object", "bad_type"),
    (json.dumps(dict(GOOD, answer={"value": 5})), "field 'answer' is dict, expected text", "bad_type"),
    (json.dumps(dict(GOOD, answer=" ")), "empty answer 'answer'", "empty_answer"),
    (json.dumps(dict(GOOD, problem=None)), "missing field 'problem'", "missing_field"),
    # gold answers that would make every rollout of the problem pay the reward's time limit
    (json.dumps(dict(GOOD, answer="1" * 1001)), "answer is 1001 characters, over reward.max_answer_chars=1000",
     "bad_answer"),
    (json.dumps(dict(GOOD, answer="\\frac{" * 21 + "1" + "}" * 21)), "answer nests braces 21 levels deep (over 20)",
     "bad_answer"),
    (json.dumps(dict(GOOD, answer="\\boxed{5")), "answer has an unbalanced '{'", "bad_answer"),
    (json.dumps(dict(GOOD, answer="\\boxed{5}")), "answer contains \\boxed{} (give the bare answer)", "bad_answer"),
]


def test_every_bad_row_is_reported_with_file_and_row(tmp_path, monkeypatch, caplog, tokenizer):
    monkeypatch.chdir(tmp_path)
    lines = [json.dumps(good(0))]
    expected = []
    for line, msg, _kind in BAD_LINES:
        lines.append(line)
        expected.append(f"data: train.jsonl row {len(lines)}: {msg}")
    lines += ["", "   ", json.dumps(good(1))]  # blank lines are not rows
    write_lines(tmp_path / "train.jsonl", lines)
    with caplog.at_level(logging.WARNING):
        ds = PromptDataset.from_files(["train.jsonl"], CFG, tokenizer)
    assert [e.id for e in ds] == ["g0", "g1"]
    assert ds.report.messages == expected
    assert ds.report.rows == len(lines) - 2 and ds.report.kept == 2
    kinds = {}
    for _, _, kind in BAD_LINES:
        kinds[kind] = kinds.get(kind, 0) + 1
    assert dict(ds.report.skipped) == kinds
    summary = [m for m in caplog.messages if f"skipped {len(BAD_LINES)} bad rows, kept 2" in m]
    assert len(summary) == 1 and "missing_field: 2" in summary[0] and "bad_json: 1" in summary[0]
    assert sum(m.endswith("(skipped)") for m in caplog.messages) == 10  # the first 10 one by one, then the count


@pytest.mark.parametrize("line,msg,kind", BAD_LINES, ids=[b[2] + str(i) for i, b in enumerate(BAD_LINES)])
def test_strict_mode_raises_one_clear_line(tmp_path, monkeypatch, tokenizer, line, msg, kind):
    monkeypatch.chdir(tmp_path)
    write_lines(tmp_path / "train.jsonl", [json.dumps(good(i)) for i in range(16)] + [line])
    strict = DataConfig(max_prompt_tokens=40, max_demo_tokens=40, strict=True)
    with pytest.raises(BadRow) as info:
        PromptDataset.from_files(["train.jsonl"], strict, tokenizer)
    assert str(info.value) == f"data: train.jsonl row 17: {msg}"
    assert (info.value.file, info.value.row, info.value.kind) == ("train.jsonl", 17, kind)
    # the same file without strict keeps the 16 good rows
    assert len(PromptDataset.from_files(["train.jsonl"], CFG, tokenizer)) == 16


def test_no_usable_rows_and_missing_file(tmp_path, tokenizer):
    write_lines(tmp_path / "bad.jsonl", ["{}"])
    with pytest.raises(ValueError, match="no usable rows"):
        PromptDataset.from_files([str(tmp_path / "bad.jsonl")], CFG, tokenizer)
    with pytest.raises(FileNotFoundError, match="nope.jsonl: no such file"):
        PromptDataset.from_files([str(tmp_path / "nope.jsonl")], CFG, tokenizer)
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unknown file type '.csv'"):
        PromptDataset.from_files([str(tmp_path / "x.csv")], CFG, tokenizer)


def test_jsonl_and_parquet_give_identical_examples(tmp_path, tokenizer):
    rows = [json.loads(line) for line in open(DataConfig().train_files[0].replace("bundled:", _assets()))][:300]
    write_lines(tmp_path / "t.jsonl", [json.dumps(r) for r in rows])
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=64)
    cfg = DataConfig()
    a = PromptDataset.from_files([str(tmp_path / "t.jsonl")], cfg, tokenizer)
    b = PromptDataset.from_files([str(tmp_path / "t.parquet")], cfg, tokenizer)
    assert len(a) == 300 and a.examples == b.examples


def test_parquet_bad_rows_have_rows_too(tmp_path, monkeypatch, tokenizer):
    monkeypatch.chdir(tmp_path)
    rows = [good(0), {k: v for k, v in good(1).items() if k != "answer"}, dict(good(2), solution="")]
    pq.write_table(pa.Table.from_pylist(rows), "train.parquet")
    ds = PromptDataset.from_files(["train.parquet"], CFG, tokenizer)
    assert len(ds) == 1
    assert ds.report.messages == ["data: train.parquet row 2: missing field 'answer'",
                                  "data: train.parquet row 3: empty demonstration 'solution'"]


def test_luffy_and_openr1_layouts(tmp_path, tokenizer):
    luffy = [{"data_source": "openr1",
              "prompt": [{"role": "system", "content": "sys"}, {"role": "user", "content": "What is 2 + 3?"}],
              "target": [{"role": "assistant", "content": "2 + 3 = 5. \\boxed{5}"}],
              "reward_model": {"style": "rule", "ground_truth": "5"}}]
    pq.write_table(pa.Table.from_pylist(luffy), tmp_path / "luffy.parquet")
    cfg = DataConfig(problem_field="prompt", demo_field="target", answer_field="reward_model.ground_truth")
    [ex] = PromptDataset.from_files([str(tmp_path / "luffy.parquet")], cfg, tokenizer)
    ref = PromptDataset.from_files([_write_one(tmp_path, good(2))], DataConfig(), tokenizer)[0]
    assert ex.prompt_ids == ref.prompt_ids and ex.demo_ids == ref.demo_ids and ex.answer == "5"
    assert ex.id == "luffy.parquet:1"  # no id field: file and row

    openr1 = [{"problem": "What is 2 + 3?", "solution": "human solution", "answer": "5",
               "generations": ["wrong \\boxed{6}", "2 + 3 = 5. \\boxed{5}"],
               "correctness_math_verify": [False, True]},
              {"problem": "What is 1 + 1?", "solution": "s", "answer": "2", "generations": ["\\boxed{3}"],
               "correctness_math_verify": [False]}]
    write_lines(tmp_path / "openr1.jsonl", [json.dumps(r) for r in openr1])
    cfg = DataConfig(demo_field="generations", demo_correct_field="correctness_math_verify")
    ds = PromptDataset.from_files([str(tmp_path / "openr1.jsonl")], cfg, tokenizer)
    assert [e.demo_ids for e in ds] == [ref.demo_ids]
    assert ds.report.messages == [f"data: {tmp_path / 'openr1.jsonl'} row 2: no demonstration marked correct in "
                                  "'correctness_math_verify'"]
    # a plain list of demonstrations: demo_index
    second = PromptDataset.from_files([str(tmp_path / "openr1.jsonl")], DataConfig(demo_field="generations",
                                                                                   demo_index=1), tokenizer)
    assert len(second) == 1 and second.report.messages[0].endswith("has 1 demonstrations, no index 1")


def _write_one(tmp_path, row):
    path = tmp_path / "one.jsonl"
    write_lines(path, [json.dumps(dict(row, problem="What is 2 + 3?", solution="2 + 3 = 5. \\boxed{5}"))])
    return str(path)


def _assets():
    from prefix_rft_megatron.data import ASSETS_DIR

    return str(ASSETS_DIR) + "/"


def test_a_directory_or_a_fake_parquet_file_is_named(tmp_path, tokenizer):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(FileNotFoundError, match="d.jsonl: is a directory, not a data file"):
        PromptDataset.from_files([str(tmp_path / "d.jsonl")], CFG, tokenizer)
    (tmp_path / "fake.parquet").write_text("not parquet at all")
    with pytest.raises(ValueError, match="fake.parquet: not a readable Parquet file"):
        PromptDataset.from_files([str(tmp_path / "fake.parquet")], CFG, tokenizer)
