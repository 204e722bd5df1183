"""The demo's run cache (demo/runs.py `run_inputs`): a finished run is reused exactly when what its result depends on
is unchanged: the resolved config, the weights it starts from, the float path and the package version."""

import shutil

import pytest
import torch
from safetensors.torch import save_file

from prefix_rft_megatron.demo.runs import REPO, run_inputs

CONF = REPO / "conf" / "cpu_demo.yaml"


@pytest.fixture
def conf(tmp_path):
    path = tmp_path / "cpu_demo.yaml"
    shutil.copy(CONF, path)
    return path


def test_a_comment_in_the_yaml_keeps_the_key(conf):
    before = run_inputs(["train.lr=1e-4"], str(conf))
    conf.write_text("# a note a reader added\n" + conf.read_text().replace("steps: 40", "steps: 40   # forty"))
    assert run_inputs(["train.lr=1e-4"], str(conf))["config"] == before["config"]


def test_a_value_changed_in_the_yaml_or_an_override_changes_the_key(conf):
    before = run_inputs([], str(conf))
    assert run_inputs(["train.lr=1e-4"], str(conf))["config"] != before["config"]
    conf.write_text(conf.read_text().replace("prompts_per_step: 16", "prompts_per_step: 8"))
    assert run_inputs([], str(conf))["config"] != before["config"]


def test_an_override_equal_to_the_files_value_resolves_to_the_same_config(conf):
    assert run_inputs(["train.steps=40"], str(conf))["config"] == run_inputs([], str(conf))["config"]


def test_the_starting_weights_are_part_of_the_key(tmp_path, conf):
    hf = tmp_path / "base_hf"
    hf.mkdir()
    overrides = [f"model.hf_path={hf}"]
    assert run_inputs(overrides, str(conf))["initial_weights"] is None  # not built yet
    save_file({"w": torch.zeros(4)}, hf / "model.safetensors")
    first = run_inputs(overrides, str(conf))["initial_weights"]
    assert first is not None and run_inputs(overrides, str(conf))["initial_weights"] == first
    save_file({"w": torch.tensor([0.0, 0.0, 0.0, 1e-7])}, hf / "model.safetensors")  # a rebuilt base
    assert run_inputs(overrides, str(conf))["initial_weights"] != first


def test_a_mistyped_override_is_one_line_naming_it(conf):
    with pytest.raises(SystemExit) as e:
        run_inputs(["train.lrr=1e-4"], str(conf))
    msg = str(e.value)
    assert "\n" not in msg and "train.lrr" in msg and "train.lr" in msg.split("did you mean", 1)[-1], msg
