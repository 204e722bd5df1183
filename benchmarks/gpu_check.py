"""The GPU path in one command, one line per check, on whatever CUDA devices the machine has.

    python benchmarks/gpu_check.py [--out benchmarks/gpu_check.json] [--work DIR]   # one or more H100/H200, < 10 min
    python benchmarks/gpu_check.py --tiny                                          # tiny sizes (CPU or GPU)

Needs installed: this package with its requirements (megatron-core 0.16.1 is pure Python: its wheel travels as
is), a CUDA torch; Transformer Engine and apex are optional (the model check says which layers ran). No sglang.

Checks (each prints `gpu_check: <name> ok|FAIL <figures>`; the last line is `gpu_check: N/N ok`):
1. process group: the default group's backend ("cpu:gloo,cuda:nccl" on CUDA) carries a CUDA and a CPU all-reduce;
2. logits vs transformers: a random Qwen2-shaped model (~0.5B, Qwen2.5-0.5B's shape; --tiny: hidden 64) converted
   to Megatron, bf16 logits against transformers' on the same tokens; the line says whether TE layers ran;
3. trainer: three `prefix-rft train` steps of `prefix_rft` (HF engine, packed micro-batches: TE's THD attention
   where TE runs), a checkpoint every step through the distributed optimizer with whichever Adam megatron-core
   picked (named in the line), then a resume for a fourth step that must continue the metrics;
4. MFU: forward + backward of a Qwen2.5-1.5B-shaped model on one 4096-token sequence through Megatron's schedule,
   model FLOPs (6 x matmul parameters x tokens + causal attention) / step time / the bf16 matmul peak measured in
   the same run (an 8192^3 matmul);
5. HF engine generation speed (64 prompts x 256 new tokens);
6. with 2+ GPUs: one trainer step at TP=2 and one at DP=2 (torchrun, NCCL).
Every figure also goes to --out as JSON. Without CUDA it runs the same code on CPU in fp32 (bf16 CPU kernels are
slow), which is what the e2e test does at --tiny size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (hidden, ffn, layers, heads, kv heads, vocab): Qwen2.5-0.5B and -1.5B shapes, and tiny stand-ins
SHAPES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000),
}


def _device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _dtype() -> str:
    return "bfloat16" if torch.cuda.is_available() else "float32"


def parity(work: Path, shape: dict) -> dict:
    from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
    from prefix_rft_megatron.convert.compare import logits_diff
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    hf = save_tiny_hf_model(work / "parity_hf", family="qwen2", max_shard_size="2GB", max_position_embeddings=4096,
                            **shape)
    meg = convert_hf_to_megatron(hf, work / "parity_meg", overwrite=True, progress=False)
    t0 = time.perf_counter()
    diff = logits_diff(str(hf), str(meg), dtype="bfloat16", seq_len=256)
    return {"dtype": "bfloat16", "max_logit_diff": diff["logit"], "max_logprob_diff": diff["logprob"],
            "tokens": diff["tokens"], "seconds": time.perf_counter() - t0}


def _train(args: list, nproc: int = 1) -> subprocess.CompletedProcess:
    # a process of its own: not this one's process group (initialize_parallel put it in the environment)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc)] if nproc > 1 else []
    cmd = [sys.executable, *launcher, "-m", "prefix_rft_megatron.cli", "train", *args]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"trainer failed (rc {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    return proc


def trainer_steps(work: Path, shape: dict, steps: int, new_tokens: int) -> dict:
    from prefix_rft_megatron.data import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    tok = load_tokenizer("bundled:tokenizer")
    policy = save_tiny_hf_model(work / "policy", family="qwen2", tie_word_embeddings=True, max_shard_size="2GB",
                                max_position_embeddings=1024, **{**shape, "vocab_size": len(tok)})
    tok.save_pretrained(policy)
    out = work / "train"
    args = [f"model.hf_path={policy}", f"logging.output_dir={out}", f"train.steps={steps}",
            f"model.params_dtype={_dtype()}", f"rollout.hf_dtype={_dtype()}", "train.prompts_per_step=8",
            "train.mini_batch_prompts=4", "train.micro_batch_size=8", f"rollout.max_new_tokens={new_tokens}",
            f"algorithm.loss.max_response_tokens={new_tokens}", f"data.max_demo_tokens={new_tokens}",
            "data.train_files=[bundled:math_chain/train.jsonl]", "eval.benchmarks=[]",
            "checkpoint.export_hf_at_end=false", "logging.tensorboard=false", "logging.progress=false",
            "reward.num_workers=1", "train.packing=true", "checkpoint.save_every=1", "checkpoint.keep_last=1"]
    t0 = time.perf_counter()
    proc = _train(args + ["checkpoint.resume=false", "checkpoint.overwrite=true"])
    fused = next((line.split("fused paths: ", 1)[1] for line in proc.stderr.splitlines() if "fused paths: " in line),
                 "?")
    first = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    _train([a for a in args if not a.startswith("train.steps=")] + [f"train.steps={steps + 1}"])  # resumes
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    if [r["step"] for r in rows] != list(range(steps + 1)) or rows[:steps] != first:
        raise RuntimeError(f"resume did not continue the metrics: steps {[r['step'] for r in rows]}")
    sync_bytes = int(rows[-1]["weight_sync/bytes"])
    copy = copy_gb_per_s(sync_bytes)
    sync = [r["weight_sync/gb_per_s"] for r in rows[1:]] or [rows[0]["weight_sync/gb_per_s"]]  # step 0 warms up
    return {"steps": len(rows), "fused_paths": fused, "logprob_diff_mean": max(r["logprob_diff/mean"] for r in rows),
            "logprob_diff_max": max(r["logprob_diff/max"] for r in rows), "step_s": rows[-1]["time/step"],
            "sync_bytes": sync_bytes, "sync_gb_per_s": max(sync), "plain_copy_gb_per_s": copy,
            "sync_vs_copy": max(sync) / copy, "seconds": time.perf_counter() - t0}


def parallel_steps(work: Path, shape: dict, tp: int, nproc: int, new_tokens: int) -> dict:
    """One trainer step under torchrun at TP=tp (DP = nproc / tp), NCCL on GPUs."""
    from prefix_rft_megatron.data import load_tokenizer
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    tok = load_tokenizer("bundled:tokenizer")
    policy = work / "policy"
    if not (policy / "config.json").is_file():
        save_tiny_hf_model(policy, family="qwen2", tie_word_embeddings=True, max_shard_size="2GB",
                           max_position_embeddings=1024, **{**shape, "vocab_size": len(tok)})
        tok.save_pretrained(policy)
    out = work / f"train_tp{tp}_n{nproc}"
    _train([f"model.hf_path={policy}", f"logging.output_dir={out}", "train.steps=1", f"parallel.tp={tp}",
            f"model.params_dtype={_dtype()}", f"rollout.hf_dtype={_dtype()}", "train.prompts_per_step=8",
            "train.mini_batch_prompts=4", "train.micro_batch_size=8", f"rollout.max_new_tokens={new_tokens}",
            f"algorithm.loss.max_response_tokens={new_tokens}", f"data.max_demo_tokens={new_tokens}",
            "data.train_files=[bundled:math_chain/train.jsonl]", "eval.benchmarks=[]",
            "checkpoint.export_hf_at_end=false", "logging.tensorboard=false", "logging.progress=false",
            "checkpoint.resume=false", "checkpoint.overwrite=true", "reward.num_workers=1"], nproc=nproc)
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return {"tp": tp, "dp": nproc // tp, "step_s": row["time/step"], "logprob_diff_max": row["logprob_diff/max"]}


def process_group() -> dict:
    """The default group carries a CUDA tensor (NCCL on GPUs) and a CPU one (gloo) through the checked helper."""
    import torch.distributed as dist

    from prefix_rft_megatron.parallel import collectives

    cuda = torch.ones(4, device=_device())
    cpu = torch.ones(4)
    collectives.all_reduce(cuda)
    collectives.all_reduce(cpu)
    _sync()
    return {"backend": dist.get_backend_config(), "world": dist.get_world_size(),
            "cuda_sum": float(cuda.sum()), "cpu_sum": float(cpu.sum())}


def copy_gb_per_s(nbytes: int, repeats: int = 5) -> float:
    """A plain device-to-device copy of `nbytes` (the baseline of the weight sync)."""
    src = torch.empty(nbytes // 2, dtype=torch.bfloat16, device=_device())
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    _sync()
    return nbytes * repeats / (time.perf_counter() - t0) / 1e9


def matmul_peak_tflops(n: int) -> float:
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=_device())
    b = torch.randn(n, n, dtype=dtype, device=_device())
    a @ b
    _sync()
    reps = 10 if torch.cuda.is_available() else 3
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def mfu(shape: dict, seq: int, peak_tflops: float) -> dict:
    from megatron.core.pipeline_parallel import get_forward_backward_func

    from prefix_rft_megatron.algo.token_stats import vocab_parallel_token_stats
    from prefix_rft_megatron.model import ModelArch, build_gpt_model
    from prefix_rft_megatron.model.tiny import tiny_hf_config
    from prefix_rft_megatron.train.optim import wrap_ddp

    arch = ModelArch.from_hf(tiny_hf_config(family="qwen2", max_position_embeddings=seq, **shape))
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = wrap_ddp(build_gpt_model(arch, params_dtype=dtype), use_distributed_optimizer=False)
    tokens = torch.randint(0, arch.vocab_size, (1, seq + 1), device=_device())
    pos = torch.arange(seq, device=_device()).unsqueeze(0)

    def forward_step(data_iter, m):
        next(data_iter)
        out = m(tokens[:, :-1], pos, None)
        return out, lambda logits: (-vocab_parallel_token_stats(logits, tokens[:, 1:])[0].sum(), {})

    def step() -> float:
        model.zero_grad_buffer()
        _sync()
        t0 = time.perf_counter()
        get_forward_backward_func()(forward_step_func=forward_step, data_iterator=iter([0]), model=[model],
                                    num_microbatches=1, seq_length=seq, micro_batch_size=1, forward_only=False)
        _sync()
        return time.perf_counter() - t0

    step()  # warm-up (allocator, kernels)
    seconds = min(step() for _ in range(3))
    h, f, L, V = arch.hidden_size, arch.ffn_hidden_size, arch.num_layers, arch.vocab_size
    q, kv = arch.num_attention_heads * arch.head_dim, arch.num_query_groups * arch.head_dim
    matmul_params = L * (h * (q + 2 * kv) + q * h + 3 * h * f) + V * h
    flops = 6 * matmul_params * seq + 6 * L * seq * seq * q  # causal attention: half of 12 L s^2 q
    achieved = flops / seconds / 1e12
    return {"params": matmul_params, "seq": seq, "step_s": seconds, "model_tflops": achieved,
            "matmul_peak_tflops": peak_tflops, "mfu": achieved / peak_tflops}


def generation(shape: dict, prompts: int, new_tokens: int) -> dict:
    from prefix_rft_megatron.rollout import GenerateRequest, SamplingParams
    from prefix_rft_megatron.rollout.hf_engine import HFEngine
    from prefix_rft_megatron.model.tiny import tiny_hf_config

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    engine = HFEngine.from_config(tiny_hf_config(family="qwen2", max_position_embeddings=1024, **shape), dtype=dtype,
                                  max_batch_size=prompts)
    engine.model.to(_device())
    engine._device = _device()
    g = torch.Generator().manual_seed(0)
    reqs = [GenerateRequest(tuple(torch.randint(0, shape["vocab_size"], (64,), generator=g).tolist()),
                            SamplingParams(n=1, temperature=1.0, max_new_tokens=new_tokens, seed=i, ignore_eos=True))
            for i in range(prompts)]
    engine.generate(reqs[:2])  # warm-up
    _sync()
    t0 = time.perf_counter()
    out = engine.generate(reqs)
    _sync()
    seconds = time.perf_counter() - t0
    tokens = sum(len(c.token_ids) for cs in out for c in cs)
    return {"prompts": prompts, "new_tokens": new_tokens, "tokens": tokens, "seconds": seconds,
            "tokens_per_s": tokens / seconds}


def _lines(name: str, r: dict) -> str:
    """The figures of one check, in words."""
    if name == "process group":
        return f"backend {r['backend']}, world {r['world']}, CUDA and CPU all-reduce"
    if name == "logits vs transformers":
        return (f"bf16 max |logit diff| {r['max_logit_diff']:.3g}, max |log-prob diff| {r['max_logprob_diff']:.3g}, "
                f"{r['tokens']} tokens")
    if name == "trainer":
        return (f"{r['steps']} steps (the last after a resume), {r['step_s']:.2f} s/step, engine vs trainer log-prob "
                f"diff max {r['logprob_diff_max']:.3g}; weight sync {r['sync_gb_per_s']:.2f} GB/s = "
                f"{r['sync_vs_copy']:.2f}x a device copy; {r['fused_paths']}")
    if name == "MFU":
        return (f"{100 * r['mfu']:.1f}% ({r['model_tflops']:.1f} of {r['matmul_peak_tflops']:.1f} TFLOP/s matmul "
                f"peak, {r['params'] / 1e9:.2f}B x {r['seq']} tokens, {r['step_s']:.3f} s)")
    if name == "generation":
        return f"{r['tokens_per_s']:.0f} tokens/s ({r['prompts']} prompts x {r['new_tokens']})"
    return f"TP={r['tp']} DP={r['dp']}: {r['step_s']:.2f} s/step, log-prob diff max {r['logprob_diff_max']:.3g}"


REQUIRED = ("megatron.core", "transformers", "omegaconf", "safetensors", "math_verify", "tqdm")


def missing_requirements() -> list[str]:
    """The imports this check needs that this environment lacks (a GPU machine may have no package index: the
    line says what to bring)."""
    import importlib.util

    def absent(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is None
        except ModuleNotFoundError:  # the parent package ("megatron" of megatron.core) is missing
            return True

    return [m for m in REQUIRED if absent(m)]


def main(argv=None) -> int:
    missing = missing_requirements()
    if missing:
        print(f"gpu_check: needs {', '.join(missing)} installed (pip install -e . from the repository, or the "
              "wheels of megatron-core==0.16.1 and the package's other requirements; megatron-core is pure Python)")
        return 2
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny sizes (the test; minutes on CPU)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "gpu_check.json"))
    p.add_argument("--work", default="", help="scratch directory (default: a temporary one)")
    a = p.parse_args(argv)
    from prefix_rft_megatron.parallel.init import initialize_parallel

    work = Path(a.work or tempfile.mkdtemp(prefix="gpu_check_"))
    work.mkdir(parents=True, exist_ok=True)
    small, big = (SHAPES["tiny"], SHAPES["tiny"]) if a.tiny else (SHAPES["0.5b"], SHAPES["1.5b"])
    new_tokens = 32 if a.tiny else 256
    initialize_parallel(1, 1)
    gpus = torch.cuda.device_count()
    device = f"{gpus} x {torch.cuda.get_device_name()}" if gpus else f"cpu ({os.cpu_count()} cores)"
    print(f"gpu_check: {device}, torch {torch.__version__}", flush=True)
    checks = [
        ("process group", process_group),
        ("logits vs transformers", lambda: parity(work, small)),
        ("trainer", lambda: trainer_steps(work, small, steps=3, new_tokens=new_tokens)),
        ("MFU", lambda: mfu(big, 256 if a.tiny else 4096, matmul_peak_tflops(512 if a.tiny else 8192))),
        ("generation", lambda: generation(small, 8 if a.tiny else 64, 16 if a.tiny else 256)),
    ]
    if gpus >= 2:
        checks += [("TP=2 step", lambda: parallel_steps(work, small, tp=2, nproc=2, new_tokens=new_tokens)),
                   ("DP=2 step", lambda: parallel_steps(work, small, tp=1, nproc=2, new_tokens=new_tokens))]
    results = {"device": device, "torch": torch.__version__, "tiny": a.tiny, "checks": {}}
    passed = 0
    for name, run in checks:
        t0 = time.perf_counter()
        try:
            r = run()
        except Exception as e:  # noqa: BLE001 - one line per failed check, the others still run
            results["checks"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(f"gpu_check: {name} FAIL {type(e).__name__}: {str(e).strip().splitlines()[-1:]}", flush=True)
            continue
        r["seconds"] = time.perf_counter() - t0
        results["checks"][name] = {"ok": True, **r}
        passed += 1
        print(f"gpu_check: {name} ok {_lines(name, r)} ({r['seconds']:.0f} s)", flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(results, indent=1))
    print(f"gpu_check: {passed}/{len(checks)} ok")
    return 0 if passed == len(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
