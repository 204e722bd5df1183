"""rollout.weight_sync=tensor: colocated servers (train.colocate) open each bucket through CUDA-IPC handles that the
trainer serializes once per server TP rank (`weight_buckets.tensor_update_body`); nothing is copied."""

from __future__ import annotations

from .. import weight_buckets


def free_ipc_memory() -> None:
    """After each bucket: release the CUDA-IPC blocks the servers have closed and return the flat copy's block to
    the driver, so a colocated update holds one bucket at a time (slime does the same per bucket)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.ipc_collect()
        torch.cuda.empty_cache()


class TensorTransport:
    path = "/update_weights_from_tensor"

    def __init__(self, tp_size: int):
        self.tp_size = tp_size

    def send(self, servers, bucket, version: str) -> None:
        """One bucket to every server of `servers` (the engine: submit_each / check)."""
        flat, meta = weight_buckets.flatten_bucket(bucket)
        # one body per server: a serialized payload must be deserialized only once
        futs = servers.submit_each(
            self.path, lambda: weight_buckets.tensor_update_body(flat, meta, self.tp_size, False, version))
        servers.check(futs, self.path)
        del flat  # the servers answered: their copies are enqueued and hold their own IPC references
        free_ipc_memory()

    def close(self) -> None:
        pass
