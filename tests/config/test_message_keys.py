"""Every config key an error message (or any string) of the package names exists in the schema: a message that
names `algo.rho` or `model.use_te` sends the user to a key they cannot set."""

import ast
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from prefix_rft_megatron.config.schema import Config

PACKAGE = Path(__file__).resolve().parents[2] / "prefix_rft_megatron"
SECTIONS = ("model", "parallel", "algorithm", "algo", "data", "reward", "rollout", "train", "checkpoint", "logging",
            "eval", "cluster", "launch")
KEY = re.compile(r"(?<![\w./:-])(" + "|".join(SECTIONS) + r")\.([a-z_]+(?:\.[a-z_]+)*)")
# dotted names in strings that are not config keys: modules, files, Python attribute paths in docs
NOT_KEYS = re.compile(r"\.(py|md|yaml|jsonl?|json)$|^(launch|train|model|data|algo|reward|rollout|eval|config|parallel)\."
                      r"(cli|loop|memory|preflight|recipes|config|meta_model|checkpoint|dist_save|forward|builder|norm|"
                      r"load|arch|tiny|dataset|rows|sampler|tokenizer|schedule|loss|token_stats|advantages|"
                      r"prefix_mask|pool|answer|engine|hf_engine|sglang|types|weight_buckets|evaluate|export|"
                      r"metrics|optim|batch|validate|loader|schema|cli_args|evaluator|benchmark|report|synthetic_math|"
                      r"parent_death|forkserver_preload|main|init|cpu_shims|log|spec|step_metrics|backends|"
                      r"collectives)\b"
                      # Hugging Face tensor and file names
                      r"|^model\.(safetensors|layers|embed_tokens|norm)\b")


def _schema_keys(cfg: DictConfig, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in cfg.items():
        keys.add(prefix + k)
        if isinstance(v, DictConfig):
            keys |= _schema_keys(v, prefix + k + ".")
    return keys


def _strings(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.lineno, node.value


def test_every_key_a_message_names_exists():
    from dataclasses import fields

    from prefix_rft_megatron.config.loader import REMOVED_KEYS
    from prefix_rft_megatron.launch.config import LaunchConfig

    # removed keys are named by the message that says what replaced them
    keys = (_schema_keys(OmegaConf.structured(Config)) | {f"launch.{f.name}" for f in fields(LaunchConfig)}
            | set(REMOVED_KEYS))
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, text in _strings(path):
            for m in KEY.finditer(text):
                name = m.group(0).rstrip(".")
                if NOT_KEYS.search(name):
                    continue
                # the longest dotted prefix that is a key must be the whole name (or the name a section of it)
                if name not in keys and not any(k.startswith(name + ".") for k in keys):
                    wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {name}")
    assert not wrong, "\n".join(wrong)
