"""Compare a converted Megatron model with its Hugging Face original on the same tokens.

Prints the max absolute logit difference and the max per-token log-prob difference, and exits non-zero beyond the
tolerance. With --tp/--pp > 1 outside torchrun, it converts the checkpoint once and relaunches itself under
`torchrun --standalone` with tp*pp processes.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

DEFAULT_TOL = {"float32": 1e-4, "bfloat16": 1e-1}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="compare_logits", description=__doc__)
    p.add_argument("--hf-dir", required=True, help="HF model directory")
    p.add_argument("--megatron-ckpt", default=None, help="converted checkpoint (default: convert --hf-dir now)")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--pp", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=None, help="max allowed |logit diff| (default 1e-4 fp32, 1e-1 bf16)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    tol = args.tol if args.tol is not None else DEFAULT_TOL[args.dtype]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.megatron_ckpt is None or (args.tp * args.pp > 1 and world == 1):
        from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron

        with tempfile.TemporaryDirectory(prefix="compare_logits_") as tmp:
            ckpt = args.megatron_ckpt or str(
                convert_hf_to_megatron(args.hf_dir, os.path.join(tmp, "megatron"), tp=args.tp, pp=args.pp))
            rest = [a for a in (argv if argv is not None else sys.argv[1:])]
            if "--megatron-ckpt" not in rest:
                rest += ["--megatron-ckpt", ckpt]
            if args.tp * args.pp == 1:
                return _compare(parse_args(rest), tol)
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                   "--nproc-per-node", str(args.tp * args.pp), "-m", "prefix_rft_megatron.convert.compare", *rest]
            return subprocess.call(cmd)
    return _compare(args, tol)


def logits_diff(hf_dir: str, megatron_ckpt: str, tp: int = 1, pp: int = 1, dtype: str = "float32", batch: int = 2,
                seq_len: int = 64, seed: int = 0) -> dict | None:
    """Megatron (this process's TP/PP rank) vs transformers on the same random tokens. Collective; returns
    {"logit": max |logit diff|, "logprob": max |log-prob diff|, "tokens": n} on the rank that compared (last PP
    stage, TP rank 0), None elsewhere. The caller owns the process group (see `main`)."""
    import torch
    from megatron.core import parallel_state

    from prefix_rft_megatron.model import ModelArch, build_gpt_model
    from prefix_rft_megatron.model.forward import forward_full_logits
    from prefix_rft_megatron.model.load import load_model_weights

    torch_dtype = getattr(torch, dtype)
    arch = ModelArch.from_hf(hf_dir)
    model = build_gpt_model(arch, params_dtype=torch_dtype)
    load_model_weights(model, megatron_ckpt)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, arch.vocab_size, (batch, seq_len), generator=g)
    logits = forward_full_logits(model, tokens, arch.vocab_size)
    if not (parallel_state.is_pipeline_last_stage() and parallel_state.get_tensor_model_parallel_rank() == 0):
        return None
    from transformers import AutoModelForCausalLM

    device = logits.device
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch_dtype).to(device).eval()
    with torch.no_grad():
        ref = hf(tokens.to(device)).logits.float()
    return {"logit": (logits - ref).abs().max().item(),
            "logprob": (torch.log_softmax(logits, -1) - torch.log_softmax(ref, -1)).abs().max().item(),
            "tokens": tokens.numel()}


def _compare(args, tol: float) -> int:
    import torch
    import torch.distributed as dist

    from prefix_rft_megatron.parallel import collectives
    from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel

    initialize_parallel(tp=args.tp, pp=args.pp, seed=args.seed)
    diff = logits_diff(args.hf_dir, args.megatron_ckpt, args.tp, args.pp, args.dtype, args.batch, args.seq_len,
                       args.seed)
    failed = torch.zeros(1)
    if diff is not None:
        ok = diff["logit"] <= tol and diff["logprob"] <= tol
        print(f"compare_logits: tp={args.tp} pp={args.pp} dtype={args.dtype} tokens={diff['tokens']} "
              f"max|logit diff|={diff['logit']:.3e} max|logprob diff|={diff['logprob']:.3e} tol={tol:.0e} "
              f"{'OK' if ok else 'FAIL'}", flush=True)
        failed[0] = 0 if ok else 1
    collectives.all_reduce(failed, op=dist.ReduceOp.MAX)  # CPU: gloo on a GPU cluster
    destroy_parallel()
    return int(failed.item())


if __name__ == "__main__":
    sys.exit(main())
