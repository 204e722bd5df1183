"""`prefix-rft train` with a bad config key, a missing data file or bad data rows: one clear line each, and no
checkpoint left behind by a failed start."""

import json
import subprocess
import sys

from train_runs import train_args


def train(args):
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "train", *args], capture_output=True,
                          text=True, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr.strip().splitlines()


def test_bad_config_key(tiny_policy, tmp_path):
    rc, _, err = train(train_args(tiny_policy, tmp_path / "o", 1) + ["train.learning_rate=1"])
    assert rc == 2 and err[-1].startswith("error: config: override 'train.learning_rate=1': unknown key")
    assert not (tmp_path / "o").exists()


def test_missing_data_file(tiny_policy, tmp_path):
    rc, _, err = train(train_args(tiny_policy, tmp_path / "o", 1) + [f"data.train_files=[{tmp_path}/nope.jsonl]"])
    assert rc == 2 and err[-1].startswith("error: ") and "nope.jsonl" in err[-1]
    assert not (tmp_path / "o" / "checkpoints").exists()


def _bad_file(tmp_path):
    good = [json.loads(l) for l in open(__import__("prefix_rft_megatron.data.config", fromlist=["x"])
                                         .resolve_path("bundled:math_chain/train.jsonl"))][:12]
    lines = [json.dumps(r) for r in good]
    lines[3] = "{not json"
    bad = dict(good[5])
    del bad["answer"]
    lines[5] = json.dumps(bad)
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_warn_by_default_and_train(tiny_policy, tmp_path):
    path = _bad_file(tmp_path)
    rc, out, err = train(train_args(tiny_policy, tmp_path / "o", 1) + [f"data.train_files=[{path}]"])
    log = out + "\n".join(err)
    assert rc == 0, log[-3000:]
    assert "train.jsonl row 4" in log and "train.jsonl row 6" in log and "answer" in log
    # one line says which fused paths are active; megatron-core's six import warnings about them are silenced
    assert log.count("fused paths: local layer spec") == 1 and "fused Adam no (torch.optim.AdamW)" in log
    assert "not installed" not in log and "UserWarning" not in log, log[-3000:]
    assert (tmp_path / "o" / "checkpoints" / "step_000001").is_dir()


def test_bad_rows_fatal_when_strict(tiny_policy, tmp_path):
    path = _bad_file(tmp_path)
    rc, _, err = train(train_args(tiny_policy, tmp_path / "o", 1) + [f"data.train_files=[{path}]", "data.strict=true"])
    assert rc == 2 and "train.jsonl row 4" in err[-1] and len(err[-1].splitlines()) == 1
    assert not (tmp_path / "o" / "checkpoints").exists()
