"""The trainer's environment has no sglang (it goes where the servers run): both weight transports, the engine and
the CUDA-IPC pickler import and serialise with `import sglang` made impossible."""

import os
import subprocess
import sys

CODE = """
import sys
sys.modules["sglang"] = None  # any `import sglang...` now raises ImportError
import torch
from prefix_rft_megatron.rollout.sglang.engine import SGLangEngine
from prefix_rft_megatron.rollout.sglang.tensor_transport import TensorTransport
from prefix_rft_megatron.rollout.sglang.distributed_transport import DistributedTransport, _default_group_factory
from prefix_rft_megatron.rollout import weight_buckets
flat, meta = weight_buckets.flatten_bucket([("w", torch.ones(2, 3))])
body = weight_buckets.tensor_update_body(flat, meta, tp_size=2)
assert len(body["serialized_named_tensors"]) == 2
from prefix_rft_megatron.compat.torch_distributed import UUIDForkingPickler, init_custom_process_group
import io, pickle
buf = io.BytesIO(); UUIDForkingPickler(buf).dump(torch.arange(4.0))
assert torch.equal(pickle.loads(buf.getvalue()), torch.arange(4.0))
print("ok")
"""


def test_transports_import_without_sglang():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_custom_group_meets_itself_over_gloo():
    """A one-member weight-update group through compat.torch_distributed.init_custom_process_group (the store the
    servers join), under torchrun's TORCHELASTIC_USE_AGENT_STORE=True (with torch's rendezvous, rank 0 would wait for
    an agent store nobody hosts), and a broadcast through the checked helper."""
    code = """
import datetime
import torch
from prefix_rft_megatron.compat.torch_distributed import init_custom_process_group
from prefix_rft_megatron.parallel import collectives
from prefix_rft_megatron.parallel.init import free_port
g = init_custom_process_group("gloo", f"tcp://127.0.0.1:{free_port()}", 1, 0, "test_group",
                              timeout=datetime.timedelta(seconds=20))
t = torch.arange(3.0)
collectives.broadcast(t, src=0, group=g)
assert collectives.served_device_types(g) >= {"cpu"}
print("ok")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, TORCHELASTIC_USE_AGENT_STORE="True"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]
