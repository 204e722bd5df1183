"""Config: structured defaults, YAML overrides, dotlist overrides, and one-line errors naming the key."""

import subprocess
import sys
from pathlib import Path

import pytest

from prefix_rft_megatron.config import ConfigError, load_config, to_yaml

REPO = Path(__file__).resolve().parents[2]


def test_base_yaml_is_the_schema_defaults():
    """conf/base.yaml lists every default; regenerate with `prefix-rft show-config --defaults > conf/base.yaml`."""
    assert (REPO / "conf" / "base.yaml").read_text() == to_yaml(load_config())


def test_yaml_then_dotlist_precedence(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("train:\n  steps: 7\n  lr: 0.5\nparallel:\n  tp: 2\n")
    cfg = load_config([f], ["train.steps=9"])
    assert (cfg.train.steps, cfg.train.lr, cfg.parallel.tp) == (9, 0.5, 2)


@pytest.mark.parametrize("override,expected", [
    ("model.hf_pth=x", "config: override 'model.hf_pth=x': unknown key 'model.hf_pth' (did you mean 'model.hf_path'?)"),
    ("parallel.tp=two", "config: override 'parallel.tp=two': bad value for 'parallel.tp'"),
    ("model.params_dtype=fp8", "config: model.params_dtype: 'fp8' is not float32 or bfloat16"),
    ("train.mini_batch_prompts=3", "config: train.mini_batch_prompts=3 must divide train.prompts_per_step=128"),
    ("train.lr=0", "config: train.lr=0.0: must be > 0"),
    ("checkpoint.optimizer_format=zero",
     "config: checkpoint.optimizer_format: 'zero' is not fully_reshardable|dp_reshardable"),
])
def test_override_errors_are_one_line(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(overrides=[override])
    assert str(e.value).startswith(expected) and "\n" not in str(e.value)


def test_yaml_unknown_key_names_the_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("rollout:\n  max_new_token: 7\n")
    with pytest.raises(ConfigError, match=rf"config: {f}: unknown key 'rollout.max_new_token' \(did you mean 'rollout.max_new_tokens'\?\)"):
        load_config([f])


def test_cli_reports_one_line_and_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.cli", "show-config", "train.stepz=1"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: config: override 'train.stepz=1': unknown key 'train.stepz' (did you mean 'train.steps'?)")


@pytest.mark.parametrize("path", sorted((REPO / "conf").glob("*.yaml")))
def test_shipped_configs_load(path):
    load_config([path])


def test_malformed_values_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^config: override \"eval.benchmarks='\[\]\": cannot parse the value"):
        load_config(overrides=["eval.benchmarks='[]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match=rf"^config: {bad}: not valid YAML"):
        load_config([bad])


def test_rollout_model_path_derived_from_model_hf_path():
    """Launched SGLang servers load the policy's starting point: the 7B recipe sets only model.hf_path."""
    cfg = load_config(["conf/qwen2.5-math-7b.yaml"])
    assert cfg.rollout.engine == "sglang" and not cfg.rollout.server_urls
    assert cfg.rollout.model_path == cfg.model.hf_path == "/data/models/Qwen2.5-Math-7B-16k"
    cfg = load_config([], ["model.hf_path=/m", "rollout.model_path=/other"])
    assert cfg.rollout.model_path == "/other"  # an explicit value is kept
    cfg = load_config([], ["model.hf_path=/m", "rollout.server_urls=[http://10.0.0.1:30000]"])
    assert cfg.rollout.model_path == ""  # attached servers hold their own weights


def test_loopback_update_group_address_refused_for_remote_servers():
    with pytest.raises(ConfigError, match="update_group_master_address=127.0.0.1 is a loopback address") as e:
        load_config([], ["rollout.engine=sglang", "rollout.weight_sync=distributed", "train.colocate=false",
                         "rollout.server_urls=[http://10.0.0.1:30000]", "rollout.update_group_master_address=127.0.0.1"])
    assert len(str(e.value).splitlines()) == 1


def test_routable_address_is_not_loopback_towards_a_remote_host():
    import ipaddress

    from prefix_rft_megatron.config.validate import routable_address

    assert routable_address("http://127.0.0.1:30000") == "127.0.0.1"
    try:  # no packet is sent; a machine with no route off loopback cannot say anything here
        addr = routable_address("http://192.0.2.10:30000")
    except OSError:
        pytest.skip("no network route off loopback on this machine")
    assert not ipaddress.ip_address(addr).is_loopback


def test_removed_key_says_what_replaced_it(tmp_path):
    f = tmp_path / "old.yaml"
    f.write_text("rollout:\n  temperature: 0.7\n")
    with pytest.raises(ConfigError, match=rf"^config: {f}: 'rollout.temperature' was removed: algorithm.temperature "):
        load_config([f])


def test_top_level_seed_sets_every_seed_not_given():
    from prefix_rft_megatron.config.schema import SEEDED_SECTIONS

    default = load_config()
    assert default.seed is None and (default.data.seed, default.rollout.seed) == (1, 1234)  # sections' own defaults
    cfg = load_config(overrides=["seed=7", "data.seed=3"])
    assert {sec: getattr(cfg, sec).seed for sec in SEEDED_SECTIONS} == {
        "parallel": 7, "algorithm": 7, "rollout": 7, "data": 3, "eval": 7}


def test_colocated_servers_need_a_trainer_rank_on_each_gpu():
    from prefix_rft_megatron.config import check_training

    cfg = load_config([], ["model.hf_path=/m", "rollout.engine=sglang", "rollout.weight_sync=tensor",
                           "train.colocate=true", "rollout.num_servers=8", "rollout.tp_size=1"])
    assert cfg.rollout.colocated_server_ranks() == list(range(8))
    assert check_training(cfg, 8) == 8
    with pytest.raises(ConfigError, match=r"colocated servers on GPUs 0\.\.7 .* only 4 trainer ranks"):
        check_training(cfg, 4)
