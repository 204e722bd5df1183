"""Megatron (TP x PP) vs Hugging Face: logits, loss and gradients on the same tokens, fp32 on CPU.

Usage: model_parity.py HF_DIR MEGATRON_CKPT TP PP OUT_DIR
Runs one forward-backward through Megatron's schedule (Megatron DDP wrapper, finalize_model_grads) with a
token-mean cross-entropy and the same on HF, and writes to OUT_DIR (one file per PP stage, from TP rank 0): the loss,
all gradients (full, HF names) for cross-layout checks, max |grad diff| against HF autograd, and on the last stage
max |logit diff| and max |log-prob diff| against HF (tests/model/test_parity.py asserts them).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import parallel_state
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.pipeline_parallel import get_forward_backward_func
from megatron.core.tensor_parallel import gather_from_tensor_model_parallel_region
from transformers import AutoModelForCausalLM

from prefix_rft_megatron.compat import cpu

from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.load import load_model_weights
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.sync.gather import iter_hf_tensors



def main(hf_dir, ckpt, tp, pp, out_dir):
    initialize_parallel(tp=int(tp), pp=int(pp))
    arch = ModelArch.from_hf(hf_dir)
    model = build_gpt_model(arch)
    load_model_weights(model, ckpt)
    ddp = DistributedDataParallel(model.config, DistributedDataParallelConfig(), model)
    model.config.finalize_model_grads_func = finalize_model_grads
    cpu.configure(model.config)

    g = torch.Generator().manual_seed(0)
    batch, seq, n_micro = 2, 12, 2
    tokens = torch.randint(0, arch.vocab_size, (n_micro * batch, seq + 1), generator=g)
    micro = [tokens[i * batch:(i + 1) * batch] for i in range(n_micro)]
    collected = []

    def forward_step(data_iter, model):
        t = next(data_iter)
        inp, labels = t[:, :-1], t[:, 1:]
        pos = torch.arange(seq).unsqueeze(0).expand(batch, -1)
        out = model(inp, pos, None)

        def loss_func(output):
            full = gather_from_tensor_model_parallel_region(output)[..., : arch.vocab_size]  # [b, s, V]
            collected.append(full.detach())
            logp = torch.log_softmax(full.float(), dim=-1)
            nll = -logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            loss = nll.mean()
            return loss, {"loss": loss.detach().clone()}  # megatron scales `loss` in place

        return out, loss_func

    fb = get_forward_backward_func()
    losses = fb(forward_step_func=forward_step, data_iterator=iter(micro), model=[ddp], num_microbatches=n_micro,
                seq_length=seq, micro_batch_size=batch, forward_only=False)
    # The schedule already ran config.finalize_model_grads_func (grad sync, tied-embedding all-reduce).

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    hf_losses = []
    for t in micro:
        out = hf(t[:, :-1])
        logp = torch.log_softmax(out.logits.float(), -1)
        loss = -logp.gather(-1, t[:, 1:].unsqueeze(-1)).mean() / n_micro  # Megatron divides by num_microbatches
        loss.backward()
        hf_losses.append((loss * n_micro).detach())
    hf_logits = [hf(t[:, :-1]).logits.detach() for t in micro]
    hf_grads = {n: p.grad for n, p in hf.named_parameters()}
    if arch.tie_word_embeddings:
        hf_grads.pop("lm_head.weight", None)

    result = {}
    if parallel_state.is_pipeline_last_stage():
        assert len(collected) == n_micro
        logit_diff = max((a - b).abs().max().item() for a, b in zip(collected, hf_logits))
        lp_diff = max(
            (torch.log_softmax(a, -1) - torch.log_softmax(b, -1)).abs().max().item()
            for a, b in zip(collected, hf_logits)
        )
        result["diff/logits_vs_hf"] = torch.tensor(logit_diff)
        result["diff/logprobs_vs_hf"] = torch.tensor(lp_diff)
        result["diff/loss_vs_hf"] = torch.tensor(max(abs(l["loss"].item() - h.item()) for l, h in zip(losses, hf_losses)))
        result["loss"] = torch.stack([l["loss"] for l in losses])
    grads = dict(iter_hf_tensors(ddp, arch, what="grad"))
    stage = parallel_state.get_pipeline_model_parallel_rank()
    result[f"diff/grads_vs_hf/stage{stage}"] = torch.tensor(
        max((grads[n] - hf_grads[n]).abs().max().item() for n in grads))
    if parallel_state.get_tensor_model_parallel_rank() == 0:
        result.update({f"grad/{n}": t for n, t in grads.items()})
        torch.save(result, Path(out_dir) / f"stage{parallel_state.get_pipeline_model_parallel_rank()}.pt")
    dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
