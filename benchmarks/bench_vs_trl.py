"""One RL step of this project vs Hugging Face TRL's GRPOTrainer at matched settings, on this CPU.

    pip install -e .[bench]                     # trl==1.16.0 (its pins fit this project's environment)
    python benchmarks/bench_vs_trl.py [--steps 6] [--runs 2] [--max-new-tokens 32] [--base DIR]

The model is the CPU demo's base (a ~0.9M-parameter Qwen2-shaped policy SFT'd on the bundled task; built here with
the demo's recipe and cached under --out, or given with --base), the prompts the first 16 of the bundled
math_chain train split, the same 16 at every step. Both trainers: 16 prompts x 8 samples, --max-new-tokens, temperature
1.0, lr 3e-4 constant, one optimizer update per step, fp32, grad clip 1.0, no weight decay, no KL, no entropy bonus,
--threads torch threads. TRL: loss_type=dr_grpo, scale_rewards=none, beta=0, epsilon=0.2, delta=3.0 (dual clip),
bf16 and gradient checkpointing off, the reward the project's math-verify scorer (in process). The project:
conf/cpu_demo.yaml with algorithm.name=rft (and once per run prefix_rft, against the same TRL numbers).

Runs alternate (project rft, TRL, project prefix_rft; --runs times), each a fresh process. Per run: the median step
time over the steps after the first, generated tokens per second of step time, ms per generated token of the
generation phase, peak RSS of the whole process tree, and start-up (process start to the first step's start).
Prints the settings, a table, and last `project/TRL step time 0.NN (rft), 0.NN (prefix_rft)`.
Timings are of this machine, under whatever else runs on it: measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GROUP, PROMPTS = 8, 16


def _poll_tree(proc: subprocess.Popen, on_poll=None) -> int:
    """Wait for `proc`; return the peak RSS (bytes) of it and all its descendants, sampled every 50 ms."""
    import psutil

    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [root] + root.children(recursive=True)
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        if on_poll is not None:
            on_poll()
        time.sleep(0.05)
    return peak


def build_inputs(out: Path, base: str | None, base_steps: int, threads: int, tiny: bool = False) -> tuple[Path, Path]:
    """(HF directory of the policy, a JSONL of the 16 prompts). `tiny`: a random policy of the demo base's shape
    (no SFT), for the smoke test."""
    from prefix_rft_megatron import demo
    from prefix_rft_megatron.data.config import resolve_path

    if tiny:
        from prefix_rft_megatron.data import load_tokenizer
        from prefix_rft_megatron.model.tiny import save_tiny_hf_model

        tok = load_tokenizer("bundled:tokenizer")
        hf = save_tiny_hf_model(out / "tiny_policy", seed=0, vocab_size=len(tok), **demo.BASE_MODEL)
        tok.save_pretrained(hf)
    elif base is None:
        hf, _ = demo.build_base(out, 1, base_steps, [], threads)  # the demo's base 1
    else:
        hf = Path(base)
    rows = resolve_path("bundled:math_chain/train.jsonl").read_text().splitlines()[:PROMPTS]
    prompts = out / "prompts.jsonl"
    prompts.write_text("\n".join(rows) + "\n")
    return hf, prompts


def run_project(algo: str, hf: Path, prompts: Path, run_dir: Path, steps: int, max_new: int, threads: int) -> dict:
    overrides = {
        "model.hf_path": str(hf), "algorithm.name": algo, "algorithm.num_prefixed": "0" if algo == "rft" else "1",
        "data.train_files": f"[{prompts}]", "data.shuffle": "false", "data.max_demo_tokens": str(max_new),
        "train.prompts_per_step": str(PROMPTS), "train.mini_batch_prompts": str(PROMPTS),  # one update per step
        "train.micro_batch_size": str(PROMPTS * GROUP), "train.steps": str(steps), "train.lr": "3e-4",
        "rollout.max_new_tokens": str(max_new), "algorithm.loss.max_response_tokens": str(max_new),
        "eval.benchmarks": "[]", "logging.output_dir": str(run_dir), "checkpoint.overwrite": "true",
        "checkpoint.resume": "false", "checkpoint.save_every": "100000", "logging.tensorboard": "false",
        "logging.progress": "false",
    }
    cmd = [sys.executable, "-m", "prefix_rft_megatron.cli", "train", str(REPO / "conf" / "cpu_demo.yaml"),
           *[f"{k}={v}" for k, v in overrides.items()]]
    metrics = run_dir / "metrics.jsonl"
    first_line = []

    def watch():
        if not first_line and metrics.is_file() and metrics.read_text().count("\n") >= 1:
            first_line.append(time.perf_counter())

    shutil.rmtree(run_dir, ignore_errors=True)  # the watcher must not see an earlier run's metrics
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    with open(run_dir / "bench.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        peak = _poll_tree(proc, watch)
    if proc.returncode != 0:
        raise SystemExit(f"error: project {algo} run failed; see {run_dir / 'bench.log'}")
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    step_s = [r["time/step"] for r in rows]
    tokens = [r["response/length_mean"] * PROMPTS * GROUP for r in rows]
    gen_ms = [1000 * r["time/rollout"] / t for r, t in zip(rows, tokens)]
    return {"step_s": step_s, "tokens": tokens, "gen_ms_per_token": gen_ms, "peak_rss": peak,
            "startup_s": first_line[0] - t0 - step_s[0] if first_line else float("nan")}


def run_trl(hf: Path, prompts: Path, run_dir: Path, steps: int, max_new: int, threads: int) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    result = run_dir / "trl_result.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--_trl-worker", str(hf), str(prompts), str(run_dir), str(steps), str(max_new),
           str(threads)]
    t0 = time.time()
    with open(run_dir / "bench.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, "OMP_NUM_THREADS": str(threads), "T0": repr(t0)})
        peak = _poll_tree(proc)
    if proc.returncode != 0 or not result.is_file():
        raise SystemExit(f"error: TRL run failed; see {run_dir / 'bench.log'}")
    return {**json.loads(result.read_text()), "peak_rss": peak}


def trl_worker(hf: str, prompts: str, run_dir: str, steps: str, max_new: str, threads: str) -> None:
    """In its own process: GRPOTrainer on the same model, prompts and settings; writes trl_result.json."""
    t0 = float(os.environ["T0"])
    import torch

    torch.set_num_threads(int(threads))
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from prefix_rft_megatron.data import DataConfig, PromptDataset, load_tokenizer
    from prefix_rft_megatron.reward import RewardConfig, score_one

    # the project's loader: AutoTokenizer would rebuild the bundled tokenizer as a Qwen2Tokenizer with another digit
    # split (data/tokenizer.py: load_tokenizer), and TRL would sample from other prompt ids
    tok = load_tokenizer(hf)
    ours = PromptDataset.from_files([prompts], DataConfig(), tok)
    texts = [tok.decode(ex.prompt_ids, skip_special_tokens=True) for ex in ours]
    # TRL tokenizes the prompt text itself (with the tokenizer's special tokens): the same ids as the project's
    assert [tok(t)["input_ids"] for t in texts] == [list(ex.prompt_ids) for ex in ours], "prompt ids differ"
    data = Dataset.from_list([{"prompt": t, "answer": ex.answer} for t, ex in zip(texts, ours)])
    reward_cfg = RewardConfig(num_workers=0)

    def math_verify(prompts, completions, answer, **kw):
        return [score_one(c, a, reward_cfg).reward for c, a in zip(completions, answer)]

    model = AutoModelForCausalLM.from_pretrained(hf, dtype=torch.float32)
    gen = {"s": 0.0, "tokens": []}
    generate = model.generate

    def timed_generate(*a, **k):
        t = time.perf_counter()
        out = generate(*a, **k)
        gen["s"] += time.perf_counter() - t
        return out

    model.generate = timed_generate
    cfg = GRPOConfig(
        output_dir=str(Path(run_dir) / "out"), per_device_train_batch_size=PROMPTS * GROUP, num_generations=GROUP,
        max_completion_length=int(max_new), temperature=1.0, top_p=1.0, learning_rate=3e-4,
        lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0, loss_type="dr_grpo",
        scale_rewards="none", beta=0.0, epsilon=0.2, delta=3.0, num_iterations=1, bf16=False,
        gradient_checkpointing=False, max_steps=int(steps), logging_steps=1, report_to="none", use_cpu=True,
        save_strategy="no", dataloader_num_workers=0, disable_dropout=True, seed=1)
    steps_s, gen_s, tokens, start = [], [], [], {}

    class Timing(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            start.setdefault("first", time.time())
            start["step"], start["gen"] = time.perf_counter(), gen["s"]

        def on_step_end(self, args, state, control, **kw):
            steps_s.append(time.perf_counter() - start["step"])
            gen_s.append(gen["s"] - start["gen"])

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                tokens.append(logs["completions/mean_length"] * PROMPTS * GROUP)

    trainer = GRPOTrainer(model=model, reward_funcs=math_verify, args=cfg, train_dataset=data, processing_class=tok,
                          callbacks=[Timing()])
    trainer.train()
    (Path(run_dir) / "trl_result.json").write_text(json.dumps({
        "step_s": steps_s, "tokens": tokens, "gen_ms_per_token": [1000 * g / t for g, t in zip(gen_s, tokens)],
        "startup_s": start["first"] - t0}))


def summarize(runs: list[dict]) -> dict:
    """Median over runs of each run's median over the steps after the first."""
    def med(key, skip_first=True):
        return statistics.median(statistics.median(r[key][1:] if skip_first and len(r[key]) > 1 else r[key])
                                 for r in runs)

    step = med("step_s")
    return {"step_s": step, "per_run_step_s": [statistics.median(r["step_s"][1:]) for r in runs],
            "tokens_per_s": statistics.median(statistics.median(t / s for t, s in zip(r["tokens"][1:], r["step_s"][1:]))
                                              for r in runs),
            "gen_ms_per_token": med("gen_ms_per_token"), "peak_rss_mib": max(r["peak_rss"] for r in runs) / 2**20,
            "startup_s": statistics.median(r["startup_s"] for r in runs)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_trl-worker":
        return trl_worker(*sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6, help="steps per run (the first is not timed)")
    ap.add_argument("--runs", type=int, default=2, help="alternating runs of each trainer")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--base", default=None, help="HF directory of the policy (default: build the demo's base)")
    ap.add_argument("--base-steps", type=int, default=600, help="SFT steps of the base when it is built")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench_vs_trl")
    ap.add_argument("--tiny", action="store_true", help="smoke test: random policy, 1 run of 2 steps, 24 new tokens")
    args = ap.parse_args()
    if args.tiny:
        args.steps, args.runs, args.max_new_tokens = 2, 1, 24  # 24: the demonstrations (<= 22 tokens) must fit
    try:
        import trl
    except ImportError:
        raise SystemExit("error: trl is not installed: pip install -e .[bench]") from None

    import torch

    args.out.mkdir(parents=True, exist_ok=True)
    hf, prompts = build_inputs(args.out, args.base, args.base_steps, args.threads, args.tiny)
    print(f"settings: model {hf}, {PROMPTS} prompts x {GROUP} samples, max_new_tokens {args.max_new_tokens}, "
          f"temperature 1.0, lr 3e-4, one update per step, fp32, {args.threads} threads, {args.steps} steps per run "
          f"(first untimed), {args.runs} alternating runs; torch {torch.__version__} "
          f"(CPU capability {torch.backends.cpu.get_cpu_capability()}), trl {trl.__version__}", flush=True)
    results: dict[str, list[dict]] = {"project rft": [], "TRL GRPOTrainer": [], "project prefix_rft": []}
    for i in range(args.runs):
        for name in results:
            run_dir = args.out / "runs" / f"{name.replace(' ', '_')}_{i}"
            if name == "TRL GRPOTrainer":
                r = run_trl(hf, prompts, run_dir, args.steps, args.max_new_tokens, args.threads)
            else:
                r = run_project(name.split()[1], hf, prompts, run_dir, args.steps, args.max_new_tokens, args.threads)
            results[name].append(r)
            print(f"  run {i + 1} {name}: median step {statistics.median(r['step_s'][1:]):.3f} s", flush=True)
    summary = {name: summarize(rs) for name, rs in results.items()}
    print(f"\n| | s/step (median; per run) | tokens/s | ms per generated token | peak RSS MiB | start-up s |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        per_run = ", ".join(f"{x:.2f}" for x in s["per_run_step_s"])
        print(f"| {name} | {s['step_s']:.2f} ({per_run}) | {s['tokens_per_s']:.0f} | {s['gen_ms_per_token']:.2f} | "
              f"{s['peak_rss_mib']:.0f} | {s['startup_s']:.1f} |")
    (args.out / "summary.json").write_text(json.dumps({"settings": vars(args) | {"out": str(args.out)},
                                                        "summary": summary, "runs": results}, indent=1, default=str))
    trl_step = summary["TRL GRPOTrainer"]["step_s"]
    print(f"\nproject/TRL step time {summary['project rft']['step_s'] / trl_step:.2f} (rft), "
          f"{summary['project prefix_rft']['step_s'] / trl_step:.2f} (prefix_rft)")


if __name__ == "__main__":
    main()
