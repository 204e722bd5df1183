"""SGLang engine against a loopback stand-in server (`StubSGLangServer` in conftest.py), since a real SGLang server
needs a GPU: command line, payloads, response parsing, load balancing, retries, health wait, weight-update and
memory call sequences."""

import sys
import time
from types import SimpleNamespace

import pytest
import torch

from prefix_rft_megatron.rollout import GenerateRequest, RolloutConfig, SamplingParams, derive_seed
from prefix_rft_megatron.rollout.sglang import (
    HTTPClient,
    SGLangEngine,
    SGLangError,
    SGLangVersionError,
    ServerProcess,
    build_server_command,
    generate_payload,
    parse_generate_response,
)
from prefix_rft_megatron.rollout.weight_buckets import unflatten_bucket

SETUP_PATHS = ("/health_generate", "/server_info")  # what attaching sends: health, then the version check


def _body(stub, path):
    return next(b for m, p, b in stub.requests if p == path)


def attach(servers, sleeps=None, **over):
    kw = dict(engine="sglang", server_urls=[s.url for s in servers], health_timeout_s=5.0, health_poll_interval_s=0.05,
              request_timeout_s=10.0, max_attempts=3, retry_backoff_s=0.01, max_requests_per_server=8)  # fmt: skip
    kw.update(over)
    sleep = (lambda s: sleeps.append(s)) if sleeps is not None else time.sleep
    return SGLangEngine(RolloutConfig(**kw), sleep=sleep)


def test_server_command_line():
    cfg = RolloutConfig(engine="sglang", model_path="/ckpt/qwen", tp_size=2, base_gpu_id=4, mem_fraction_static=0.55,
                        base_port=31000, host="0.0.0.0", dtype="bfloat16", seed=5, server_python="/env/bin/python",
                        extra_server_args=["--context-length", "9216"])  # fmt: skip
    assert build_server_command(cfg, 1) == [
        "/env/bin/python", "-m", "sglang.launch_server",
        "--model-path", "/ckpt/qwen", "--tp-size", "2", "--base-gpu-id", "6", "--mem-fraction-static", "0.55",
        "--host", "0.0.0.0", "--port", "31001", "--dtype", "bfloat16", "--random-seed", "5", "--skip-tokenizer-init",
        "--enable-memory-saver", "--context-length", "9216",
    ]  # fmt: skip
    cfg2 = RolloutConfig(engine="sglang", model_path="m", enable_memory_saver=False, deterministic_inference=True)
    cmd = build_server_command(cfg2, 0)
    assert cmd[0] == sys.executable and "--enable-memory-saver" not in cmd
    assert cmd[-1] == "--enable-deterministic-inference"


def test_generate_payload_and_response_parsing():
    p = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=16, stop_token_ids=(7, 9), seed=1)
    assert generate_payload([1, 2, 3], p, 42) == {
        "input_ids": [1, 2, 3],
        "sampling_params": {"temperature": 0.6, "top_p": 0.95, "max_new_tokens": 16, "sampling_seed": 42,
                            "ignore_eos": False, "no_stop_trim": True, "skip_special_tokens": False,
                            "stop_token_ids": [7, 9]},  # fmt: skip
        "return_logprob": True,
        "logprob_start_len": -1,
        "stream": False,
    }
    ok = {"output_ids": [5, 9], "meta_info": {"finish_reason": {"type": "stop", "matched": 9},
          "output_token_logprobs": [[-0.25, 5, None], [-1.5, 9, None]], "completion_tokens": 2}}  # fmt: skip
    c = parse_generate_response(ok)
    assert (c.token_ids, c.logprobs, c.finish_reason) == ([5, 9], [-0.25, -1.5], "stop")
    length = {"output_ids": [4], "meta_info": {"finish_reason": {"type": "length", "length": 1},
              "output_token_logprobs": [[-0.5, 4, None]]}}  # fmt: skip
    assert parse_generate_response(length).finish_reason == "length"
    abort = {"output_ids": [], "meta_info": {"finish_reason": {"type": "abort", "message": "prompt too long"},
             "output_token_logprobs": []}}  # fmt: skip
    with pytest.raises(SGLangError, match="aborted.*prompt too long"):
        parse_generate_response(abort)
    bad = {"output_ids": [5, 9],
           "meta_info": {"finish_reason": {"type": "stop"}, "output_token_logprobs": [[-0.2, 5, None]]}}
    with pytest.raises(SGLangError, match="1 logprobs for 2 output ids"):
        parse_generate_response(bad)
    swapped = {"output_ids": [5],
               "meta_info": {"finish_reason": {"type": "length"}, "output_token_logprobs": [[-0.2, 6, None]]}}
    with pytest.raises(SGLangError, match="entry 0"):
        parse_generate_response(swapped)
    with pytest.raises(SGLangError, match="no output_token_logprobs"):
        parse_generate_response({"output_ids": [1], "meta_info": {"finish_reason": {"type": "length"}}})


def test_generate_over_two_servers(stub_servers):
    stub_generate = stub_servers[0].generate_fn
    eng = attach(stub_servers)
    try:
        reqs = [
            GenerateRequest([1, 2, 3], 
                            SamplingParams(n=3, max_new_tokens=6, seed=10, stop_token_ids=tuple(range(3, 20)))),
            GenerateRequest([1, 2, 3, 100, 101], SamplingParams(n=1, max_new_tokens=4, seed=11)),
        ]
        out = eng.generate(reqs)
        bodies = [b for s in stub_servers for m, p, b in s.requests if p == "/generate"]
        assert len(bodies) == 4 and all("/generate" in s.paths() for s in stub_servers)  # both servers got work
        by_seed = {b["sampling_params"]["sampling_seed"]: b for b in bodies}
        for req, comps in zip(reqs, out):
            assert len(comps) == req.params.n
            for j, c in enumerate(comps):
                body = by_seed[derive_seed(req.params.seed, j)]
                assert body["input_ids"] == list(req.input_ids) and body["return_logprob"] is True
                expected = stub_generate(body)
                assert c.token_ids == expected["output_ids"]
                assert c.logprobs == [e[0] for e in expected["meta_info"]["output_token_logprobs"]]
                assert c.finish_reason == expected["meta_info"]["finish_reason"]["type"]
        assert any(c.finish_reason == "stop" and c.token_ids[-1] < 20 for c in out[0])
        assert out[1][0].finish_reason == "length" and len(out[1][0].token_ids) == 4
    finally:
        eng.shutdown()


def test_transient_errors_are_retried_with_backoff(stub_server):
    sleeps = []
    eng = attach([stub_server], sleeps=sleeps, retry_backoff_s=0.5, max_attempts=4)
    try:
        stub_server.failures["/generate"] = [503, 502, 429]
        out = eng.generate([GenerateRequest([1, 2], SamplingParams(max_new_tokens=3, seed=0))])
        assert len(out[0][0].token_ids) == 3
        assert stub_server.paths().count("/generate") == 4
        assert sleeps == [0.5, 1.0, 2.0]

        sleeps.clear()
        stub_server.failures["/generate"] = [503] * 10
        with pytest.raises(SGLangError, match="after 4 attempt"):
            eng.generate([GenerateRequest([1, 2], SamplingParams(max_new_tokens=3, seed=0))])
        assert sleeps == [0.5, 1.0, 2.0]

        stub_server.failures["/generate"] = [400]
        n = stub_server.paths().count("/generate")
        with pytest.raises(SGLangError, match="HTTP 400: .*injected 400"):
            eng.generate([GenerateRequest([1, 2], SamplingParams(max_new_tokens=3, seed=0))])
        assert stub_server.paths().count("/generate") == n + 1  # a client error is not retried
    finally:
        eng.shutdown()


def test_connection_refused_is_retried_then_reported(stub_server):
    port = stub_server.url.rsplit(":", 1)[1]
    stub_server.close()  # nothing listens on that port any more
    sleeps = []
    client = HTTPClient(f"http://127.0.0.1:{port}", timeout_s=2.0, max_attempts=3, backoff_s=0.1, sleep=sleeps.append)
    with pytest.raises(SGLangError, match=r"failed after 3 attempt\(s\)"):
        client.post("/generate", {"input_ids": [1]})
    assert sleeps == [0.1, 0.2]


def test_health_wait_times_out_with_a_clear_message(stub_server):
    stub_server.health_code = 503
    t0 = time.monotonic()
    with pytest.raises(TimeoutError) as err:
        attach([stub_server], health_timeout_s=0.4)
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert stub_server.url in msg and "not healthy after 0.4s" in msg and "HTTP 503" in msg
    assert "rollout.health_timeout_s" in msg
    assert stub_server.paths("GET").count("/health_generate") >= 2


def test_health_wait_reports_a_server_process_that_exited(stub_server, tmp_path):
    eng = attach([stub_server])
    try:
        proc = ServerProcess([sys.executable, "-c", "import sys; print('CUDA error: no GPU'); sys.exit(3)"],
                             tmp_path / "server_0.log")  # fmt: skip
        proc.proc.wait(10)
        eng.processes = [proc]
        eng.clients[0] = HTTPClient("http://127.0.0.1:9", max_attempts=1)  # discard port: never healthy
        with pytest.raises(SGLangError, match=r"exited with code 3 before it became healthy(.|\n)*CUDA error: no GPU"):
            eng.wait_until_healthy(5.0, 0.05)
    finally:
        eng.shutdown()


def _state(model_seed=0):
    torch.manual_seed(model_seed)
    return [
        ("model.embed_tokens.weight", torch.randn(512, 256)),  # 512 KiB
        ("model.layers.0.self_attn.q_proj.weight", torch.randn(256, 256)),
        ("model.layers.0.mlp.up_proj.weight", torch.randn(1024, 256)),  # 1 MiB: travels alone
        ("model.norm.weight", torch.randn(256).to(torch.bfloat16)),
        ("lm_head.weight", torch.randn(512, 256)),
    ]


def test_colocated_weight_update_sequence_and_payloads(stub_servers):
    eng = attach(stub_servers, weight_sync="tensor", weight_bucket_mib=1, tp_size=2)
    try:
        state = _state()
        # incoming buckets are regrouped to <= 1 MiB: [embed, q_proj], [up_proj (1 MiB, alone)], [norm, lm_head]
        eng.update_weights([state[:2], state[2:]], version=3)
        for s in stub_servers:
            seq = [p for m, p, b in s.requests if p not in SETUP_PATHS]
            assert seq == ["/pause_generation", "/begin_weight_update"] + ["/update_weights_from_tensor"] * 3 + [
                "/end_weight_update", "/flush_cache", "/continue_generation"]  # fmt: skip
            assert _body(s, "/pause_generation") == {"mode": "abort"}
            updates = [b for m, p, b in s.requests if p == "/update_weights_from_tensor"]
            for b in updates:
                assert b["load_format"] == "flattened_bucket" and b["flush_cache"] is False
                assert b["weight_version"] == "3" and len(b["serialized_named_tensors"]) == 2  # one per TP rank
            assert [n for n, _ in s.received_tensors] == [n for n, _ in state]
            for (n, t), (n2, t2) in zip(s.received_tensors, state):
                assert t.dtype == t2.dtype and torch.equal(t, t2), n
    finally:
        eng.shutdown()


def test_in_place_pause_flushes_the_cache_before_the_next_generate(stub_server):
    """In-flight requests refuse a flush during an in_place update; the radix cache still holds the old weights'
    prefixes, so the flush comes before the next generate (a real server otherwise serves stale KV: tests/engine)."""
    eng = attach([stub_server], pause_mode="in_place")
    try:
        eng.update_weights([_state()[:1]])
        seq = [p for m, p, b in stub_server.requests if p not in SETUP_PATHS]
        assert seq == ["/pause_generation", "/begin_weight_update", "/update_weights_from_tensor",
                       "/end_weight_update", "/continue_generation"]  # fmt: skip
        assert _body(stub_server, "/pause_generation") == {"mode": "in_place"}
        assert "weight_version" not in _body(stub_server, "/update_weights_from_tensor")
        for _ in range(2):
            eng.generate([GenerateRequest([1, 2], SamplingParams(max_new_tokens=2, seed=1))])
        seq = [p for m, p, b in stub_server.requests if p not in SETUP_PATHS]
        assert seq[5:] == ["/flush_cache", "/generate", "/generate"]  # once, before the first generate
    finally:
        eng.shutdown()


def test_failed_update_leaves_servers_paused_and_says_so(stub_server):
    eng = attach([stub_server])
    try:
        stub_server.failures["/update_weights_from_tensor"] = [503]
        with pytest.raises(SGLangError, match="left paused with partially updated weights.*HTTP 503"):
            eng.update_weights([_state()[:1]], version=9)
        assert "/continue_generation" not in stub_server.paths()
        assert stub_server.paths().count("/update_weights_from_tensor") == 1  # weight payloads are never re-sent
    finally:
        eng.shutdown()


def test_distributed_weight_update_broadcasts_what_the_servers_allocate(stub_servers):
    groups, sent = [], []

    def factory(addr, port, world_size, rank, name):
        groups.append((addr, port, world_size, rank, name))
        return "GROUP"

    cfg = RolloutConfig(engine="sglang", server_urls=[s.url for s in stub_servers], weight_sync="distributed",
                        tp_size=2, weight_bucket_mib=1, update_group_master_port=29777,
                        health_poll_interval_s=0.05)  # fmt: skip
    eng = SGLangEngine(cfg, update_group_factory=factory, broadcast=lambda t, g: sent.append((t.clone(), g)))
    try:
        state = _state()
        eng.update_weights([state], version=1)
        eng.update_weights([state[:1]], version=2)  # the group is formed once
        assert groups == [("127.0.0.1", 29777, 5, 0, "prefix_rft_weight_update")]
        for i, s in enumerate(stub_servers):
            inits = [b for m, p, b in s.requests if p == "/init_weights_update_group"]
            assert inits == [{"master_address": "127.0.0.1", "master_port": 29777, "rank_offset": 1 + 2 * i,
                              "world_size": 5, "group_name": "prefix_rft_weight_update",
                              "backend": "gloo"}]  # this machine's device: gloo on CPU (NCCL on CUDA)
            seq = [p for m, p, b in s.requests if p not in (*SETUP_PATHS, "/init_weights_update_group")]
            assert seq[:2] == ["/pause_generation", "/begin_weight_update"]
            assert seq[-3:] == ["/end_weight_update", "/flush_cache", "/continue_generation"]
        bodies = [b for m, p, b in stub_servers[0].requests if p == "/update_weights_from_distributed"]
        assert len(bodies) == len(sent) == 4  # 3 buckets for version 1, 1 for version 2
        received = []
        for body, (flat, group) in zip(bodies, sent):
            assert group == "GROUP" and body["load_format"] == "flattened_bucket"
            # what sglang's FlattenedTensorBucket.empty allocates from names/dtypes/shapes: running byte offsets
            meta, off = [], 0
            for n, d, sh in zip(body["names"], body["dtypes"], body["shapes"]):
                dt = getattr(torch, d)
                size = torch.Size(sh).numel() * dt.itemsize
                assert off % dt.itemsize == 0
                meta.append(SimpleNamespace(name=n, dtype=dt, shape=torch.Size(sh), start_idx=off, end_idx=off + size))
                off += size
            assert flat.dtype == torch.uint8 and flat.numel() == off
            received += unflatten_bucket(flat, meta)
        assert [n for n, _ in received[:5]] == [n for n, _ in state]
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(received, state + state[:1]))
        assert bodies[0]["dtypes"][0] == "float32" and "bfloat16" in [d for b in bodies for d in b["dtypes"]]
    finally:
        eng.shutdown()


def test_release_and_resume_memory(stub_servers):
    eng = attach(stub_servers)
    try:
        eng.release_memory()
        eng.resume_memory()
        assert eng.health()
        for s in stub_servers:
            posts = [(p, b) for m, p, b in s.requests if m == "POST"]
            # sglang asserts (and dies) if a release finds its scheduler busy: a flush that waits for idle comes first
            assert posts == [("/flush_cache", None), ("/release_memory_occupation", {}),
                             ("/resume_memory_occupation", {})]
            assert "/flush_cache?timeout=120" in s.raw_paths
        stub_servers[1].health_code = 503
        assert not eng.health()
    finally:
        eng.shutdown()


def test_launch_needs_a_model_path():
    with pytest.raises(ValueError, match="rollout.model_path"):
        SGLangEngine(RolloutConfig(engine="sglang"))


def test_launch_reports_a_missing_sglang(tmp_path):
    """The real launch path: `python -m sglang.launch_server ...` in this venv (no sglang) exits at once."""
    cfg = RolloutConfig(engine="sglang", model_path="/nonexistent/model", base_port=39517, health_timeout_s=60.0,
                        health_poll_interval_s=0.05, server_log_dir=str(tmp_path))  # fmt: skip
    with pytest.raises(SGLangError, match=r"exited with code 1 (.|\n)*No module named 'sglang'"):
        SGLangEngine(cfg)
    assert "No module named 'sglang'" in (tmp_path / "server_0.log").read_text()


FAKE_SERVER = r'''#!{python}
# Stands in for `python -m sglang.launch_server`: serves /health_generate on --port, forks a child like SGLang does.
import os, sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
argv = sys.argv
port = int(argv[argv.index("--port") + 1])
child = os.fork()
if child == 0:
    time.sleep(600)  # a worker process of the server's group
    sys.exit(0)
print("child:", child, flush=True)
class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        body = b'{{"version": "0.5.23"}}' if self.path == "/server_info" else b""
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
print("argv:", " ".join(argv[1:]), flush=True)
HTTPServer(("127.0.0.1", port), H).serve_forever()
'''


def test_launch_waits_for_health_and_shutdown_stops_the_process_group(tmp_path):
    from prefix_rft_megatron.parallel.init import free_port

    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_SERVER.format(python=sys.executable))
    fake.chmod(0o755)
    port = free_port()
    cfg = RolloutConfig(engine="sglang", model_path="/m", server_python=str(fake), base_port=port, tp_size=1,
                        health_timeout_s=30.0, health_poll_interval_s=0.05, server_log_dir=str(tmp_path))  # fmt: skip
    eng = SGLangEngine(cfg)
    proc = eng.processes[0]
    try:
        assert eng.urls == [f"http://127.0.0.1:{port}"] and eng.health()
        assert proc.returncode() is None
    finally:
        eng.shutdown()
    assert proc.returncode() is not None
    log = (tmp_path / "server_0.log").read_text()
    child = int(log.split("child: ")[1].split()[0])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the forked worker went with the group (gone, or a zombie nobody reaps)
        try:
            state = open(f"/proc/{child}/stat").read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            state = "gone"
        if state in ("gone", "Z"):
            break
        time.sleep(0.05)
    assert state in ("gone", "Z"), state
    assert "argv: -m sglang.launch_server --model-path /m --tp-size 1" in log


@pytest.mark.parametrize("version,ok", [("0.5.23", True), ("0.5.23.post1", True), ("0.5.23+cu130", True),
                                        ("0.5.22", False), ("0.5.24", False), ("0.6.0", False)])
def test_server_version_checked_on_attach(stub_server, version, ok):
    stub_server.version = version
    if ok:
        attach([stub_server]).shutdown()
        return
    with pytest.raises(SGLangVersionError, match=f"runs sglang {version}; this client is written for sglang 0.5.23") as e:
        attach([stub_server])
    assert len(str(e.value).splitlines()) == 1
    assert isinstance(e.value, ValueError)  # a user's install: `prefix-rft train` reports it in one line


def test_update_group_address_found_from_the_route_to_the_servers(stub_servers):
    """rollout.update_group_master_address empty: rank 0's own address on the route to the first server (here the
    servers are on loopback, so 127.0.0.1), never a fixed loopback that remote servers would dial."""
    groups = []
    cfg = RolloutConfig(engine="sglang", server_urls=[s.url for s in stub_servers], weight_sync="distributed",
                        health_poll_interval_s=0.05)
    assert cfg.update_group_master_address == ""
    eng = SGLangEngine(cfg, update_group_factory=lambda *a: groups.append(a) or "G", broadcast=lambda t, g: None)
    try:
        eng.update_weights([_state()[:1]], version=1)
        assert groups[0][0] == "127.0.0.1"
        assert _body(stub_servers[0], "/init_weights_update_group")["master_address"] == "127.0.0.1"
    finally:
        eng.shutdown()


def test_launched_servers_do_not_inherit_the_trainers_settings():
    from prefix_rft_megatron.rollout.sglang.server import server_env

    env = server_env({"CUDA_DEVICE_MAX_CONNECTIONS": "1", "RANK": "3", "MASTER_PORT": "29500", "HF_HOME": "/hf",
                      "CUDA_VISIBLE_DEVICES": "0,1", "TORCHELASTIC_USE_AGENT_STORE": "True"})
    assert env == {"HF_HOME": "/hf", "CUDA_VISIBLE_DEVICES": "0,1"}


def test_request_cap_is_per_server(stub_servers):
    eng = attach(stub_servers, max_requests_per_server=3)
    try:  # 3 in flight per server, for each of the 2, and one for the weight-update calls
        assert eng._pool._max_workers == 3 * 2 + 1
    finally:
        eng.shutdown()
