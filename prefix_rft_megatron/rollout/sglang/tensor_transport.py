"""rollout.weight_sync=tensor: colocated servers (train.colocate) open each bucket through CUDA-IPC handles; nothing
is copied. Every trainer rank serializes the bucket on its own GPU (`sync.weight_sync`, per-rank mode) and the
handles are gathered on the engine's rank (`weight_buckets.RankHandles`): server i's TP rank j, on GPU
base_gpu_id + i * tp_size + j, gets the handle of the trainer rank on that GPU (slime's `_send_to_colocated_engine`),
so no server maps another GPU's memory. A plain bucket (one process holds every tensor: tests, benchmarks) is
serialized once per server TP rank instead."""

from __future__ import annotations

from .. import weight_buckets
from ..weight_buckets import free_ipc_memory


class TensorTransport:
    path = "/update_weights_from_tensor"

    def __init__(self, tp_size: int, base_gpu_id: int = 0):
        self.tp_size = tp_size
        self.base_gpu_id = base_gpu_id

    def rank_of(self, server: int, tp_rank: int) -> int:
        """The trainer rank on the GPU of server `server`'s TP rank `tp_rank` (node 0: rank = local rank = GPU)."""
        return self.base_gpu_id + server * self.tp_size + tp_rank

    def send(self, servers, bucket, version: str) -> None:
        """One bucket to every server of `servers` (the engine: submit_each / check)."""
        if isinstance(bucket, weight_buckets.RankHandles):
            bodies = iter([{"serialized_named_tensors": [bucket.payloads[self.rank_of(i, j)]
                                                         for j in range(self.tp_size)],
                            "load_format": "flattened_bucket", "flush_cache": False,
                            **({"weight_version": version} if version else {})}
                           for i in range(len(servers.clients))])
            servers.check(servers.submit_each(self.path, lambda: next(bodies)), self.path)
            return
        flat, meta = weight_buckets.flatten_bucket(bucket)
        # one body per server: a serialized payload must be deserialized only once
        futs = servers.submit_each(
            self.path, lambda: weight_buckets.tensor_update_body(flat, meta, self.tp_size, False, version))
        servers.check(futs, self.path)
        del flat  # the servers answered: their copies are enqueued and hold their own IPC references
        free_ipc_memory()

    def close(self) -> None:
        pass
