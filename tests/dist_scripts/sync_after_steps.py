"""Weight sync after 2 optimizer updates: Megatron (TP x PP x DP, gloo) -> HFEngine in global rank 0's process.

Usage: sync_after_steps.py HF_DIR MEGATRON_CKPT TP PP DIST_OPT BUCKET_BYTES
Reports per rank (tests/sync/test_weight_sync.py asserts):
- how the two error paths went (an engine on a rank that is not its replica's first; an engine failing mid-update);
- on the last PP stage: max |log-prob| difference of a fixed sequence between the engine's model (log_softmax of
  fp32 logits) and Megatron's recomputed ones (forward_full_logits), after and before the sync;
- on rank 0 (the engine's): each received bucket's names, shapes and bytes, the engine's state dict names and
  shapes, the sync's stats, and max |w_engine - w_adamw_reference| (optim_common).
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

from results import report


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


def error_paths(ddp, arch, engine, bucket_bytes) -> dict:
    out = {"model_parallel_size": parallel_state.get_model_parallel_group().size()}
    # An engine on a rank that is not its replica's first rank: every rank of the replica refuses, at construction.
    try:
        WeightSync(ddp, arch, engine=object() if dist.get_rank() == 1 else None, bucket_bytes=bucket_bytes)
        out["misplaced_engine_error"] = None
    except ValueError as e:
        out["misplaced_engine_error"] = str(e)
    # An engine failing mid-update: the owner re-raises its error, the other stages are not left blocked.
    failing = FailingEngine() if engine is not None else None
    out["owns_failing_engine"] = failing is not None
    try:
        WeightSync(ddp, arch, engine=failing, bucket_bytes=bucket_bytes).sync(version=-1)
        out["failing_engine_raised"] = False
    except KeyError:
        out["failing_engine_raised"] = True
    return out


class HandlesEngine:
    """Per-rank mode's receiving side, as SGLang's servers would see it: each gathered payload unpickled (CPU
    tensors travel by value) and rebuilt into named tensors, per trainer rank."""

    def __init__(self):
        self.by_rank = {}

    def update_weights(self, buckets, version=None):
        import base64
        import pickle

        from prefix_rft_megatron.rollout.weight_buckets import unflatten_bucket

        for handles in buckets:
            for rank, payload in enumerate(handles.payloads):
                if payload is None:
                    continue
                obj = pickle.loads(base64.b64decode(payload))
                for name, t in unflatten_bucket(obj["flattened_tensor"], obj["metadata"]):
                    self.by_rank.setdefault(rank, {})[name] = t.clone()


def per_rank_mode(ddp, arch, bucket_bytes, reference) -> dict:
    """Every rank hands its own copy of every bucket (server_ranks = all ranks); rank 0 gathers them. `reference`:
    the HF engine's state dict after the plain sync (rank 0)."""
    world = dist.get_world_size()
    engine = HandlesEngine() if dist.get_rank() == 0 else None
    stats = WeightSync(ddp, arch, engine=engine, bucket_bytes=bucket_bytes, server_ranks=list(range(world))).sync(3)
    out = {"tensors": stats.tensors}
    try:  # an engine failing mid-update: rank 0 re-raises, the other ranks finish their gathers and return
        WeightSync(ddp, arch, engine=FailingEngine() if engine else None, bucket_bytes=bucket_bytes,
                   server_ranks=list(range(world))).sync(4)
        out["failing_engine_raised"] = False
    except KeyError:
        out["failing_engine_raised"] = True
    if engine is not None:
        out["ranks"] = sorted(engine.by_rank)
        out["names_match"] = all(set(t) == set(reference) for t in engine.by_rank.values())
        out["max_diff"] = max((t[n] - reference[n]).abs().max().item() for t in engine.by_rank.values() for n in t)
    return out


def main(hf_dir, ckpt, tp, pp, dist_opt, bucket_bytes):
    layout = initialize_parallel(tp=int(tp), pp=int(pp))
    bucket_bytes = int(bucket_bytes)
    hyper = Hyper(grad_clip=1.0)
    ddp, arch, _ = build_trained(hf_dir, ckpt, hyper, 2, dist_opt == "1")

    engine = None
    if dist.get_rank() == 0:
        torch.manual_seed(99)  # the engine starts from other random weights than the trained model
        engine = RecordingEngine(HFEngine.from_config(hf_dir))
    result = {"error_paths": error_paths(ddp, arch, engine, bucket_bytes)}
    sync = WeightSync(ddp, arch, engine=engine, bucket_bytes=bucket_bytes)
    tokens = torch.randint(0, arch.vocab_size, (2, 17), generator=torch.Generator().manual_seed(7))
    before = [engine_logprobs(engine.inner, tokens) if engine else None]
    stats = sync.sync(version=2)

    # Megatron's log-probs of the same tokens, on the last PP stage of every DP replica.
    logits = forward_full_logits(ddp, tokens[:, :-1], arch.vocab_size)
    box = [engine_logprobs(engine.inner, tokens) if engine else None, before[0]]
    dist.broadcast_object_list(box, src=0)
    if parallel_state.is_pipeline_last_stage():
        meg = torch.log_softmax(logits, -1).gather(-1, tokens[:, 1:].unsqueeze(-1)).squeeze(-1)
        result["logprob_diff"] = (meg - box[0]).abs().max().item()
        result["logprob_diff_before_sync"] = (meg - box[1]).abs().max().item()

    sent = {n: t for n, t in engine.inner.model.state_dict().items()} if engine is not None else None
    if engine is not None and arch.tie_word_embeddings:
        sent.pop("lm_head.weight", None)
    result["per_rank"] = per_rank_mode(ddp, arch, bucket_bytes, sent)
    if engine is not None:
        expected = {n: list(t.shape) for n, t in engine.inner.model.state_dict().items()}
        ref, _ = reference_trained(hf_dir, hyper, 2, layout.dp)
        ref_sd, eng_sd = ref.state_dict(), engine.inner.model.state_dict()
        result["engine"] = {
            "weight_version": engine.inner.weight_version,
            "buckets": [[[n, list(shape), nb] for n, shape, nb in b] for b in engine.buckets],
            "state_dict": expected, "tied": arch.tie_word_embeddings,
            "stats": {"bytes": stats.bytes, "buckets": stats.buckets, "tensors": stats.tensors},
            "max_weight_diff_vs_adamw": max((eng_sd[n] - ref_sd[n]).abs().max().item() for n in expected),
        }
    report(result)
    dist.barrier()
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
