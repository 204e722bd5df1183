"""Weight sync after 2 optimizer updates: Megatron (TP x PP x DP, gloo) -> HFEngine in global rank 0's process.

Usage: sync_after_steps.py HF_DIR MEGATRON_CKPT TP PP DIST_OPT BUCKET_BYTES
Checks (asserting here; the test greps the summary lines):
- per-token log-probs of a fixed sequence from the engine's model (log_softmax of fp32 logits) equal Megatron's
  recomputed ones (forward_full_logits, last PP stage) to LOGPROB_TOL; before the sync they differ (> 1e-2);
- every bucket the engine received is <= BUCKET_BYTES, unless it is a single larger tensor;
- the names and shapes the engine received are exactly its state dict's (tied embeddings: no lm_head), once each;
- the engine's weights equal the torch.optim.AdamW reference (optim_common) to WEIGHT_TOL.
"""

import sys

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from optim_common import Hyper, build_trained, reference_trained
from prefix_rft_megatron.model.forward import forward_full_logits
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from prefix_rft_megatron.rollout.hf_engine import HFEngine
from prefix_rft_megatron.rollout.weight_buckets import tensor_nbytes
from prefix_rft_megatron.sync import WeightSync

LOGPROB_TOL = 1e-4
WEIGHT_TOL = 1e-5


class RecordingEngine:
    """Forwards update_weights to an HFEngine and records each bucket's (names, shapes, bytes) as it passes."""

    def __init__(self, inner):
        self.inner = inner
        self.buckets = []

    def update_weights(self, buckets, version=None):
        def record():
            for b in buckets:
                b = list(b)
                self.buckets.append([(n, tuple(t.shape), tensor_nbytes(t)) for n, t in b])
                yield b

        self.inner.update_weights(record(), version=version)


def engine_logprobs(engine, tokens):
    with torch.no_grad():
        logits = engine.model(tokens[:, :-1]).logits.float()
    return torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)


class FailingEngine:
    """Takes one bucket, then fails like an engine that rejects a name."""

    def update_weights(self, buckets, version=None):
        for _ in buckets:
            raise KeyError("rejected")


def check_error_paths(ddp, arch, engine, bucket_bytes):
    # An engine on a rank that is not its replica's first rank: every rank of the replica refuses, at construction.
    if dist.get_world_size() > 1:
        try:
            WeightSync(ddp, arch, engine=object() if dist.get_rank() == 1 else None, bucket_bytes=bucket_bytes)
        except ValueError as e:
            assert "not TP/PP rank 0 of their model replica" in str(e), e
            refused = True
        else:
            refused = False
        mp_size = parallel_state.get_model_parallel_group().size()
        assert refused == (mp_size > 1), (refused, mp_size)  # with DP=2, rank 1 is its own replica's first rank
    # An engine failing mid-update: the owner re-raises its error, the other stages are not left blocked.
    failing = FailingEngine() if engine is not None else None
    try:
        WeightSync(ddp, arch, engine=failing, bucket_bytes=bucket_bytes).sync(version=-1)
    except KeyError:
        assert failing is not None
    else:
        assert failing is None
    print(f"[rank={dist.get_rank()}] error paths OK", flush=True)


def main(hf_dir, ckpt, tp, pp, dist_opt, bucket_bytes):
    layout = initialize_parallel(tp=int(tp), pp=int(pp))
    bucket_bytes = int(bucket_bytes)
    hyper = Hyper(grad_clip=1.0)
    ddp, arch, _ = build_trained(hf_dir, ckpt, hyper, 2, dist_opt == "1")

    engine = None
    if dist.get_rank() == 0:
        torch.manual_seed(99)  # the engine starts from other random weights than the trained model
        engine = RecordingEngine(HFEngine.from_config(hf_dir))
    check_error_paths(ddp, arch, engine, bucket_bytes)
    sync = WeightSync(ddp, arch, engine=engine, bucket_bytes=bucket_bytes)
    tokens = torch.randint(0, arch.vocab_size, (2, 17), generator=torch.Generator().manual_seed(7))
    before = [engine_logprobs(engine.inner, tokens) if engine else None]
    stats = sync.sync(version=2)

    # Megatron's log-probs of the same tokens, on the last PP stage of every DP replica.
    logits = forward_full_logits(ddp, tokens[:, :-1], arch.vocab_size)
    box = [engine_logprobs(engine.inner, tokens) if engine else None, before[0]]
    dist.broadcast_object_list(box, src=0)
    tag = f"[tp={tp} pp={pp} dp={layout.dp} rank={dist.get_rank()}]"
    if parallel_state.is_pipeline_last_stage():
        meg = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        diff = (meg - box[0]).abs().max().item()
        diff_before = (meg - box[1]).abs().max().item()
        print(f"{tag} max|logprob engine - megatron|={diff:.3e} (before sync {diff_before:.3e})", flush=True)
        assert diff <= LOGPROB_TOL, diff
        assert diff_before > 1e-2, diff_before

    if engine is not None:
        assert engine.inner.weight_version == 2
        sizes = [sum(nb for _, _, nb in b) for b in engine.buckets]
        over = [b for b, s in zip(engine.buckets, sizes) if s > bucket_bytes and len(b) > 1]
        assert not over, over
        names = [n for b in engine.buckets for n, _, _ in b]
        expected = {n: tuple(t.shape) for n, t in engine.inner.model.state_dict().items()}
        if arch.tie_word_embeddings:
            expected.pop("lm_head.weight", None)
        got = {n: s for b in engine.buckets for n, s, _ in b}
        assert len(names) == len(set(names)), "a tensor was sent twice"
        assert got == expected, (set(got) ^ set(expected))
        assert "lm_head.weight" not in got or not arch.tie_word_embeddings
        single_large = sum(1 for b, s in zip(engine.buckets, sizes) if s > bucket_bytes)
        assert stats.bytes == sum(sizes) and stats.buckets == len(sizes) and stats.tensors == len(names)
        ref, _ = reference_trained(hf_dir, hyper, 2, layout.dp)
        ref_sd = ref.state_dict()
        eng_sd = engine.inner.model.state_dict()
        wdiff = max((eng_sd[n] - ref_sd[n]).abs().max().item() for n in expected)
        print(f"{tag} synced {stats.tensors} tensors in {stats.buckets} buckets, {stats.bytes} bytes, "
              f"max bucket {max(sizes)} (bound {bucket_bytes}, {single_large} single oversize), "
              f"{stats.seconds:.3f}s; names/shapes == HF state dict ({len(expected)}), "
              f"tied={arch.tie_word_embeddings}; max|w_engine - w_adamw_ref|={wdiff:.3e}", flush=True)
        assert wdiff <= WEIGHT_TOL, wdiff
        print(f"{tag} SYNC OK", flush=True)
    dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
