"""A colocated engine (train.colocate with rollout.offload_during_training): the servers share every trainer GPU, so
their memory and the trainer's take turns. Released before the step trains (Trainer.train_step); after it, every
rank runs `sync_into_colocated_engine`, slime's order:

1. every rank returns its cached CUDA blocks (the step's freed activations: the caching allocator keeps them
   reserved, and each GPU hosts a server rank that needs as much free as when it started), then a barrier, so no
   server takes memory back while a trainer rank still holds it;
2. the engine takes back its weights only, and the weights are synced into them (the sync's transient, one bucket
   and the gathered tensors, lives beside the engine's weights but not its KV cache; each bucket's IPC blocks are
   collected as it lands: rollout/sglang/tensor_transport.py);
3. every rank frees the sync's blocks, a barrier, and the engine takes back its KV cache.
launch/memory.py sizes the peak of step 2 beside the generation peak.
"""

from __future__ import annotations

import gc

import torch

from prefix_rft_megatron.parallel import collectives


def free_cached_memory() -> None:
    """Drop unreachable tensors and return the allocator's cached blocks to the driver (on CPU there is no cache to
    return, and nothing is done)."""
    if torch.cuda.is_available():
        gc.collect()
        torch.cuda.empty_cache()


def sync_into_colocated_engine(engine, weight_sync, version: int):
    """Collective (every rank); `engine` on the rank that owns it, None elsewhere. Returns the sync's stats."""
    free_cached_memory()
    collectives.barrier()
    if engine is not None:
        engine.resume_memory("weights")
    collectives.barrier()
    stats = weight_sync.sync(version=version)
    free_cached_memory()
    collectives.barrier()
    if engine is not None:
        engine.resume_memory("kv_cache")
    return stats
