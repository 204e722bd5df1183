"""Deprecated and removed keys: `data.eval_files` stands for `eval.benchmarks` (with a warning) when that is unset;
`train.eval_max_problems` (never read; `eval.max_problems` is) is gone."""

import warnings

import pytest

from prefix_rft_megatron.config import ConfigError, load_config
from prefix_rft_megatron.evaluation.config import BUNDLED_BENCHMARKS


def test_eval_files_unset_by_default_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = load_config()
    assert cfg.data.eval_files == [] and cfg.eval.benchmarks == BUNDLED_BENCHMARKS


def test_eval_files_alone_is_eval_benchmarks(tmp_path):
    yaml = tmp_path / "old.yaml"
    yaml.write_text("data:\n  eval_files: [a.jsonl, b.jsonl]\n")
    with pytest.warns(FutureWarning, match=r"data.eval_files is deprecated .*used as eval.benchmarks"):
        cfg = load_config([yaml])
    assert cfg.eval.benchmarks == ["a.jsonl", "b.jsonl"]


@pytest.mark.parametrize("benchmarks,expected", [("[b.jsonl]", ["b.jsonl"]), ("[]", [])])
def test_eval_benchmarks_wins_over_eval_files(benchmarks, expected):
    with pytest.warns(FutureWarning, match=r"ignored, eval.benchmarks="):
        cfg = load_config(overrides=["data.eval_files=[a.jsonl]", f"eval.benchmarks={benchmarks}"])
    assert cfg.eval.benchmarks == expected


def test_eval_max_problems_is_gone():
    with pytest.raises(ConfigError, match=r"unknown key 'train.eval_max_problems'"):
        load_config(overrides=["train.eval_max_problems=5"])
