"""`prefix-rft launch --check`: will this job start, connect and fit, decided before it is queued (no GPU needed).

1. the config as the job will see it: every section's checks and derived values (`config.validate`), the world size
   split into TP x PP x DP and each mini-batch into micro-batches, the rollout engine's settings (the launch command
   of SGLang servers, a weight-sync path that can connect);
2. the model: its config.json (from `model.hf_path`, `--hf-config`, or, where the model directory is not reachable
   from here, the bundled copy named like it, `assets/model_configs/<name>.json`), heads and KV heads vs TP, layers
   vs PP, the padded vocabulary, sequence length vs the model's context;
3. one rank's model per pipeline stage built on the meta device to count its parameters (`launch.meta_model`);
4. the per-GPU memory of every stage (`launch.memory`), and with a colocated SGLang engine its weights and KV cache.
It prints the table and `fits`, or exits non-zero with one line that names what is illegal or does not fit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from prefix_rft_megatron.algo.spec import algorithm_spec
from prefix_rft_megatron.config import ConfigError, check_training, load_config
from prefix_rft_megatron.data.config import ASSETS_DIR
from prefix_rft_megatron.launch import memory
from prefix_rft_megatron.model.arch import ArchError, ModelArch

BUNDLED_CONFIGS = ASSETS_DIR / "model_configs"


class CheckFailed(ValueError):
    """What makes the job unable to start or to fit (one line)."""


@dataclass
class CheckResult:
    table: str
    verdict: str  # "fits", or the one line of what does not


def model_config(hf_path: str, hf_config: str = "") -> tuple[dict, str]:
    """(config.json as a dict, where it came from)."""
    candidates = [Path(hf_config)] if hf_config else []
    if hf_path:
        candidates += [Path(hf_path) / "config.json", BUNDLED_CONFIGS / f"{Path(hf_path).name}.json"]
    for path in candidates:
        if path.is_dir():
            path = path / "config.json"
        if path.is_file():
            return json.loads(path.read_text()), str(path)
    raise CheckFailed(f"model.hf_path={hf_path!r}: no config.json there (nor a bundled one of that name); "
                      "pass --hf-config FILE")


def count_stage_params(arch: ModelArch, tp: int, pp: int, divisible_by: int) -> list[int]:
    """Parameters per rank of each pipeline stage, from models built on the meta device (a separate process)."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(arch.to_dict(), f)
    proc = subprocess.run([sys.executable, "-m", "prefix_rft_megatron.launch.meta_model", f.name, str(tp), str(pp),
                           str(divisible_by)], capture_output=True, text=True, timeout=600)
    Path(f.name).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise CheckFailed(f"building the model on the meta device failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["stage_params"]


def _check_engine(cfg, world_per_node: int) -> None:
    r = cfg.rollout
    if r.engine != "sglang":
        return
    from prefix_rft_megatron.rollout.sglang import build_server_command

    if not r.server_urls:
        if not r.model_path:
            raise CheckFailed("rollout.model_path: empty, and launched SGLang servers need a model to load")
        for i in range(r.num_servers):
            build_server_command(r, i)
        if cfg.train.colocate and r.num_servers * r.tp_size > world_per_node:
            raise CheckFailed(f"rollout: {r.num_servers} servers x tp_size {r.tp_size} need more GPUs than the "
                              f"{world_per_node} of a node")


def run_check(files: Sequence[str], overrides: Sequence[str], nodes: int = 1, gpus_per_node: int = 8,
              gpu_mem_gib: float = 80.0, hf_config: str = "",
              reserve_gib: float = memory.DEFAULT_RESERVE_GIB) -> CheckResult:
    """Raises ConfigError / CheckFailed for what cannot start; returns the table and the fit verdict otherwise."""
    cfg = load_config(files, overrides)
    world = nodes * gpus_per_node
    dp = check_training(cfg, world)
    tp, pp = cfg.parallel.tp, cfg.parallel.pp
    raw, source = model_config(cfg.model.hf_path, hf_config)
    try:
        arch = ModelArch.from_hf(raw)
        arch.check_parallel(tp, pp, where=source)
    except ArchError as e:
        raise CheckFailed(str(e).replace("config: ", f"{source}: ", 1)) from None
    seq = cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens
    if seq > arch.max_position_embeddings:
        raise CheckFailed(f"{source}: max_position_embeddings={arch.max_position_embeddings} < data.max_prompt_tokens "
                          f"+ rollout.max_new_tokens = {seq}; raise the model's context (rope_theta and "
                          "max_position_embeddings in its config.json) or shorten the responses")
    _check_engine(cfg, gpus_per_node)
    group = algorithm_spec(cfg.algorithm).group_size
    lay = memory.Layout(
        tp=tp, pp=pp, dp=dp, seq_len=seq, micro_batch_size=cfg.train.micro_batch_size,
        # by token budget the count depends on the lengths: at most one micro-batch per sequence (the memory bound)
        num_microbatches=cfg.train.mini_batch_prompts * group // (dp * (1 if cfg.train.max_tokens_per_micro_batch
                                                                        else cfg.train.micro_batch_size)),
        max_tokens_per_micro_batch=cfg.train.max_tokens_per_micro_batch,
        reference_model=cfg.algorithm.loss.kl_coef > 0,
        sequence_parallel=cfg.parallel.sequence_parallel, recompute=cfg.model.recompute_activations,
        distributed_optimizer=cfg.parallel.use_distributed_optimizer,
        param_bytes=2 if cfg.model.params_dtype == "bfloat16" else 4,
        make_vocab_size_divisible_by=cfg.model.make_vocab_size_divisible_by,
        bucket_bytes=cfg.rollout.weight_bucket_mib * 2**20)
    counted = count_stage_params(arch, tp, pp, lay.make_vocab_size_divisible_by)
    formula = [memory.stage_params(arch, lay, s) for s in range(pp)]
    if counted != formula:  # the estimate's own count must be the model's
        raise CheckFailed(f"parameter count per stage: meta-device model {counted}, estimate {formula}")
    engine = None
    if cfg.train.colocate and cfg.rollout.engine == "sglang":
        total = memory.stage_params(arch, memory.Layout(tp=1, pp=1, dp=1, seq_len=seq), 0)
        engine = memory.Engine(cfg.rollout.mem_fraction_static, cfg.rollout.tp_size, total)
    stages = memory.estimate(arch, lay, engine, reserve_gib, gpu_mem_gib)
    table = format_table(cfg, arch, lay, stages, source, world, gpu_mem_gib)
    return CheckResult(table, verdict(stages, lay, engine, arch, gpu_mem_gib, seq))


def verdict(stages, lay, engine, arch, gpu_gib: float, seq: int) -> str:
    worst = max(stages, key=lambda s: s.train_peak)
    if worst.train_peak > gpu_gib:
        hint = "" if lay.recompute else "; model.recompute_activations=true would save " \
            f"{worst.terms['activations, no recompute'] - worst.terms['activations, full recompute']:.1f} GiB"
        return (f"does not fit: training on pipeline stage {worst.stage} needs {worst.train_peak:.1f} GiB per GPU, "
                f"more than {gpu_gib:g}{hint}")
    if engine is not None:
        kv_tokens = min(s.engine_kv for s in stages) * memory.GiB / memory.kv_bytes_per_token(arch, engine.tp_size)
        if kv_tokens < seq:
            return (f"does not fit: the colocated SGLang engine's KV cache holds {max(kv_tokens, 0):.0f} tokens, less "
                    f"than one {seq}-token sequence (raise rollout.mem_fraction_static or shard the trainer more)")
        gen = max(s.gen_peak for s in stages)
        if gen > gpu_gib:
            return f"does not fit: generation with the colocated engine needs {gen:.1f} GiB per GPU, more than {gpu_gib:g}"
    return "fits"


def _micro_batch_words(cfg, lay) -> str:
    packed = "packed" if cfg.train.packed else "padded"
    if lay.max_tokens_per_micro_batch:
        return f"micro-batches of <= {lay.tokens} tokens ({packed})"
    return f"micro-batch {lay.micro_batch_size} x {lay.seq_len} tokens ({packed})"


def format_table(cfg, arch, lay, stages, source, world, gpu_gib) -> str:
    head = [f"model: {source} ({arch.family}, {arch.num_layers} layers, hidden {arch.hidden_size}, "
            f"vocab {arch.vocab_size} padded to {memory.padded_vocab(arch, lay)})",
            f"layout: {world} GPUs = TP {lay.tp} x PP {lay.pp} x DP {lay.dp}, sequence parallel "
            f"{'on' if lay.sp else 'off'}, {_micro_batch_words(cfg, lay)}, "
            f"{'<= ' if lay.max_tokens_per_micro_batch else ''}{lay.num_microbatches} micro-batches per update, recompute {'full' if lay.recompute else 'off'}, "
            f"{cfg.model.params_dtype}, {'distributed' if lay.distributed_optimizer else 'replicated'} optimizer"]
    names = list(stages[0].terms)
    cols = [f"stage {s.stage}" for s in stages]
    width = max(len(n) for n in names + ["training peak"])
    lines = ["GiB per GPU".ljust(width) + "".join(c.rjust(10) for c in cols),
             "parameters per GPU".ljust(width) + "".join(f"{s.params / 1e9:9.2f}B" for s in stages)]
    for n in names:
        lines.append(n.ljust(width) + "".join(f"{s.terms[n]:10.1f}" for s in stages))
    lines.append("training peak".ljust(width) + "".join(f"{s.train_peak:10.1f}" for s in stages))
    if "engine KV cache (colocated)" in names:
        lines.append("generation peak (colocated)".ljust(width) + "".join(f"{s.gen_peak:10.1f}" for s in stages))
    lines.append(f"GPU memory: {gpu_gib:g} GiB (--gpu-mem-gib); training peak = weights + gradients + optimizer + "
                 "max(step activations + logits + pipeline buffers, weight-sync peak) + reserve"
                 + (" + reference weights (KL)" if "reference weights (KL)" in names else ""))
    return "\n".join(head + lines)


def main(files: Sequence[str], overrides: Sequence[str], nodes: int, gpus_per_node: int, gpu_mem_gib: float,
         hf_config: str = "") -> int:
    try:
        result = run_check(files, overrides, nodes, gpus_per_node, gpu_mem_gib, hf_config)
    except (ConfigError, CheckFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(result.table)
    print(result.verdict)
    if result.verdict != "fits":
        print(f"error: {result.verdict}", file=sys.stderr)
        return 1
    return 0
