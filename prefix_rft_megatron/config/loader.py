"""Load a config: structured defaults <- YAML files (in order) <- `a.b=c` overrides.

Unknown or mistyped keys and ill-typed values fail at start-up with one line naming the file (or the override)
and the key, with the closest valid key as a hint.
"""

from __future__ import annotations

import difflib
import warnings
from pathlib import Path
from typing import Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from prefix_rft_megatron.config.schema import SEEDED_SECTIONS, Config
from prefix_rft_megatron.config.validate import ConfigError, check, derive


def _all_keys(cfg: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in cfg.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys += _all_keys(v, full + ".")
    return keys


# Keys that existed once, with what replaces them (an old config gets this instead of "unknown key").
REMOVED_KEYS = {
    "rollout.temperature": "algorithm.temperature is the one temperature of rollouts, log-probs and entropies",
}


def _explain(err: OmegaConfBaseException, schema: DictConfig, source: str, given_key: str = "") -> ConfigError:
    key = getattr(err, "full_key", None) or given_key
    if isinstance(err, ConfigKeyError) or "not in struct" in str(err) or "Key '" in str(err):
        if key in REMOVED_KEYS:
            return ConfigError(f"config: {source}: '{key}' was removed: {REMOVED_KEYS[key]}")
        hint = difflib.get_close_matches(key, _all_keys(schema), n=1)
        more = f" (did you mean '{hint[0]}'?)" if hint else ""
        return ConfigError(f"config: {source}: unknown key '{key}'{more}")
    if isinstance(err, ValidationError):
        msg = str(err).splitlines()[0]
        return ConfigError(f"config: {source}: bad value for '{key}': {msg}")
    return ConfigError(f"config: {source}: {str(err).splitlines()[0]}")


def _sets(cfg: DictConfig, key: str) -> bool:
    return OmegaConf.select(cfg, key, default=None) is not None


def _apply_deprecated(cfg: Config, benchmarks_set: bool) -> Config:
    """`data.eval_files` (deprecated) stands for `eval.benchmarks` when that is not set; otherwise it is ignored."""
    if cfg.data.eval_files:
        if benchmarks_set:
            what = (f"ignored, eval.benchmarks={list(cfg.eval.benchmarks)} is set"
                    if list(cfg.data.eval_files) != list(cfg.eval.benchmarks) else "the same as eval.benchmarks")
        else:
            cfg.eval.benchmarks = list(cfg.data.eval_files)
            what = "used as eval.benchmarks"
        warnings.warn(f"config: data.eval_files is deprecated and will be removed ({what}); set eval.benchmarks",
                      FutureWarning, stacklevel=3)
    return cfg


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    schema = OmegaConf.structured(Config)
    cfg = schema
    benchmarks_set = False
    seeds_set: set[str] = set()  # sections whose seed a file or override gives (the top-level seed leaves them)
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise ConfigError(f"config: {path}: file not found")
        try:
            loaded = OmegaConf.load(path)
        except Exception as e:  # noqa: BLE001 - YAML syntax errors come from the yaml library
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"config: {path}: not valid YAML ({first})") from None
        if not isinstance(loaded, DictConfig):
            raise ConfigError(f"config: {path}: the top level must be a mapping of sections (model:, train:, ...), "
                              f"not a {type(loaded).__name__.replace('Config', '').lower() or 'value'}")
        try:
            cfg = OmegaConf.merge(cfg, loaded)
        except OmegaConfBaseException as e:
            raise _explain(e, schema, str(path)) from None
        benchmarks_set |= isinstance(loaded, DictConfig) and _sets(loaded, "eval.benchmarks")
        seeds_set |= {sec for sec in SEEDED_SECTIONS if _sets(loaded, f"{sec}.seed")}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"config: override {item!r} is not of the form key=value")
        try:
            parsed = OmegaConf.from_dotlist([item])
        except Exception as e:  # noqa: BLE001 - the value is YAML; a malformed one must still be one line
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"config: override {item!r}: cannot parse the value ({first})") from None
        try:
            cfg = OmegaConf.merge(cfg, parsed)
        except OmegaConfBaseException as e:
            raise _explain(e, schema, f"override {item!r}", item.split("=", 1)[0]) from None
        benchmarks_set |= _sets(parsed, "eval.benchmarks")
        seeds_set |= {sec for sec in SEEDED_SECTIONS if _sets(parsed, f"{sec}.seed")}
    try:
        cfg = _apply_deprecated(OmegaConf.to_object(cfg), benchmarks_set)  # to_object runs __post_init__ checks
    except (ValueError, OmegaConfBaseException) as e:
        raise ConfigError(f"config: {str(e).splitlines()[0]}") from None
    if cfg.seed is not None:
        for sec in SEEDED_SECTIONS:
            if sec not in seeds_set:
                getattr(cfg, sec).seed = cfg.seed
    check(derive(cfg))
    return cfg


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
