"""RolloutConfig as an OmegaConf structured config; weight buckets (bounds, SGLang's flattened layout, serialization);
sglang stays a lazy import."""

import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from prefix_rft_megatron.rollout import RolloutConfig
from prefix_rft_megatron.rollout.weight_buckets import (
    distributed_update_payload,
    flatten_bucket,
    rebucket,
    tensor_update_body,
    unflatten_bucket,
)


def test_config_is_an_omegaconf_structured_config():
    base = OmegaConf.structured(RolloutConfig)
    urls = "server_urls=[http://10.0.0.2:30000,http://10.0.0.3:30000]"
    overrides = ["engine=sglang", urls, "tp_size=4", "top_p=0.95"]
    cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(overrides))
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, RolloutConfig)
    assert obj.server_urls == ["http://10.0.0.2:30000", "http://10.0.0.3:30000"] and obj.tp_size == 4
    d = RolloutConfig()
    assert (d.top_p, d.weight_bucket_mib, d.engine) == (1.0, 512, "hf")
    p = RolloutConfig(top_p=0.95, max_new_tokens=64, stop_token_ids=[7], seed=3).sampling_params(0.6)
    assert (p.temperature, p.top_p, p.max_new_tokens, p.stop_token_ids, p.seed, p.n) == (0.6, 0.95, 64, (7,), 3, 1)
    with pytest.raises(ValidationError, match="Value 'four' of type 'str' could not be converted to Integer"):
        OmegaConf.merge(base, OmegaConf.from_dotlist(["tp_size=four"]))


@pytest.mark.parametrize(
    "kw, field",
    [
        (dict(engine="vllm"), "rollout.engine='vllm'"),
        (dict(weight_sync="disk"), "rollout.weight_sync"),
        (dict(top_p=0.0), "rollout.top_p"),
        (dict(mem_fraction_static=1.2), "rollout.mem_fraction_static"),
        (dict(server_urls=["10.0.0.2:30000"]), "rollout.server_urls"),
    ],
)
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError) as err:
        RolloutConfig(**kw)
    assert str(err.value).startswith(field)


def test_rebucket_bounds_sizes_and_keeps_order():
    ts = [(f"t{i}", torch.zeros(n, dtype=torch.float32)) for i, n in enumerate([100, 200, 50, 1000, 10, 10, 300])]
    out = list(rebucket([ts[:2], ts[2:5], ts[5:]], max_bytes=1200))
    assert [[n for n, _ in b] for b in out] == [["t0", "t1"], ["t2"], ["t3"], ["t4", "t5"], ["t6"]]
    assert all(sum(t.numel() * 4 for _, t in b) <= 1200 or len(b) == 1 for b in out)
    assert out[0][0][1] is ts[0][1]  # references, not copies


def test_flatten_round_trip_and_alignment():
    named = [("a", torch.randn(3, 5).to(torch.bfloat16)), ("b", torch.randn(2, 2)), ("c", torch.arange(6).view(2, 3))]
    with pytest.raises(ValueError, match="'b'.*byte 30, not a multiple of 4"):
        flatten_bucket(named)  # 15 bf16 = 30 bytes, then a float32
    ok = [named[2], named[1], named[0]]  # larger itemsizes first: aligned
    flat, meta = flatten_bucket(ok)
    assert flat.dtype == torch.uint8 and flat.numel() == 48 + 16 + 30
    assert [(m.start_idx, m.end_idx) for m in meta] == [(0, 48), (48, 64), (64, 94)]
    for (n, t), (n2, t2) in zip(unflatten_bucket(flat, meta), ok):
        assert n == n2 and t.dtype == t2.dtype and torch.equal(t, t2)
    noncontig = torch.randn(4, 6).t()
    flat, meta = flatten_bucket([("nc", noncontig)])
    assert torch.equal(unflatten_bucket(flat, meta)[0][1], noncontig)


def test_payload_bodies():
    named = [("w", torch.randn(4, 4)), ("v", torch.randn(4))]
    flat, meta = flatten_bucket(named)
    body = tensor_update_body(flat, meta, tp_size=4, weight_version="12")
    assert set(body) == {"serialized_named_tensors", "load_format", "flush_cache", "weight_version"}
    assert len(body["serialized_named_tensors"]) == 4
    # a CPU tensor travels by value (a shared-memory fd would be refused by an unrelated process: the server):
    # each rank's payload unpickles, with the standard unpickler SGLang uses, to the same bytes and metadata
    import base64
    import pickle

    for payload in body["serialized_named_tensors"]:
        got = pickle.loads(base64.b64decode(payload))
        assert torch.equal(got["flattened_tensor"], flat) and [m.name for m in got["metadata"]] == ["w", "v"]
        assert not got["flattened_tensor"].is_shared()
    dbody, dflat = distributed_update_payload(named, "g", flush_cache=True)
    assert dbody == {"names": ["w", "v"], "dtypes": ["float32", "float32"], "shapes": [[4, 4], [4]], "group_name": "g",
                     "load_format": "flattened_bucket", "flush_cache": True}  # fmt: skip
    assert torch.equal(dflat, flat)


def test_sglang_is_not_imported():
    code = (
        "import sys, prefix_rft_megatron.rollout.sglang, prefix_rft_megatron.rollout.weight_buckets, "
        "prefix_rft_megatron.rollout.hf_engine; assert 'sglang' not in sys.modules, 'sglang imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
