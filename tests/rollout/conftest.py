"""Fixtures of the rollout tests: tiny HF configs, and a loopback HTTP server standing in for SGLang.

`StubSGLangServer` STANDS IN FOR an SGLang 0.5.23 server, which needs a GPU and cannot run here. It listens on
127.0.0.1 only, records every request (method, path, JSON body), and answers in the formats of sglang 0.5.23's
http_server.py: /generate -> {"output_ids", "meta_info": {"finish_reason": {"type": ...}, "output_token_logprobs":
[[logprob, id, null], ...], ...}}; weight/memory/pause endpoints -> {"success": true, "message": ...} or the
`{"message", "status": "ok"}` of pause/continue. Payloads of /update_weights_from_tensor are decoded with an unpickler
that admits only globals on sglang 0.5.23's SafeUnpickler allow-list (srt/utils/common.py), as the real server does.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

# The subset of sglang 0.5.23 SafeUnpickler.ALLOWED_GLOBALS a CPU flattened-bucket payload needs (copied names only).
SGLANG_ALLOWED_GLOBALS = {
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("types", "SimpleNamespace"),
    ("torch", "Size"),
    ("torch", "Tensor"),
    ("torch", "uint8"),
    ("torch", "float32"),
    ("torch", "bfloat16"),
    ("torch", "float16"),
    ("torch", "int64"),
    ("torch", "UntypedStorage"),
    ("torch.storage", "UntypedStorage"),
    ("torch.multiprocessing.reductions", "rebuild_tensor"),
    ("torch.multiprocessing.reductions", "rebuild_storage_fd"),
    ("torch.multiprocessing.reductions", "rebuild_storage_filename"),
    ("torch.multiprocessing.reductions", "rebuild_typed_storage"),
    ("multiprocessing.resource_sharer", "DupFd"),
    # a CPU tensor pickled by value (weight_buckets.serialize_for_ranks): sglang 0.5.23 allows these too, and maps
    # torch.storage._load_from_bytes to its own weights-only torch.load
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch.storage", "_load_from_bytes"),
}


class RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in SGLANG_ALLOWED_GLOBALS:
            raise RuntimeError(f"Blocked unsafe global ({module}.{name}) during pickle deserialization")
        return super().find_class(module, name)


def sglang_deserialize(b64: str):
    return RestrictedUnpickler(io.BytesIO(base64.b64decode(b64, validate=True))).load()


def stub_generate(body: dict) -> dict:
    """A deterministic stand-in for sampling: tokens from random.Random(sampling_seed), stop on stop_token_ids."""
    sp = body["sampling_params"]
    rng = random.Random(sp.get("sampling_seed", 0))
    stops = set(sp.get("stop_token_ids") or [])
    ids, entries, reason = [], [], {"type": "length", "length": sp["max_new_tokens"]}
    for k in range(sp["max_new_tokens"]):
        t = rng.randrange(3, 40)
        ids.append(t)
        entries.append([-0.5 - 0.01 * k, t, None])
        if t in stops:
            reason = {"type": "stop", "matched": t}
            break
    return {
        "output_ids": ids,
        "meta_info": {
            "id": "stub",
            "finish_reason": reason,
            "prompt_tokens": len(body["input_ids"]),
            "completion_tokens": len(ids),
            "cached_tokens": 0,
            "output_token_logprobs": entries,
            "output_token_logprobs_length": len(entries),
        },
    }


class StubSGLangServer:
    def __init__(self):
        self.requests = []  # (method, path, body) in arrival order
        self.raw_paths = []  # the request paths with their query strings
        self.failures = {}  # path -> list of HTTP codes to answer (one per request) before answering normally
        self.health_code = 200
        self.generate_fn = stub_generate
        self.received_tensors = []  # (name, tensor) decoded from /update_weights_from_tensor, in order
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, code, obj):
                data = (obj if isinstance(obj, str) else json.dumps(obj)).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self, method):
                n = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(n) if n else b""
                body = json.loads(raw) if raw else None
                path = self.path.split("?")[0]
                with stub.lock:
                    stub.requests.append((method, path, body))
                    stub.raw_paths.append(self.path)
                    queue = stub.failures.get(path)
                    fail = queue.pop(0) if queue else None
                if fail is not None:
                    return self._answer(fail, {"error": f"injected {fail}"})
                code, obj = stub.route(method, path, body)
                self._answer(code, obj)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.version = "0.5.23"
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def route(self, method, path, body):
        if path in ("/health", "/health_generate"):
            return self.health_code, ""
        if path == "/server_info":  # sglang 0.5.23 answers with its server args and "version"
            return 200, {"version": self.version, "skip_tokenizer_init": True}
        if path == "/generate":
            return 200, self.generate_fn(body)
        if path in ("/pause_generation", "/continue_generation"):
            return 200, {"message": "ok", "status": "ok"}
        if path == "/flush_cache":
            return 200, "Cache flushed.\n"
        if path == "/update_weights_from_tensor":
            payloads = [sglang_deserialize(s) for s in body["serialized_named_tensors"]]
            d = payloads[0]
            for m in d["metadata"]:
                t = d["flattened_tensor"][m.start_idx : m.end_idx].view(m.dtype).reshape(m.shape)
                self.received_tensors.append((m.name, t.clone()))
            return 200, {"success": True, "message": "Success"}
        if path in (
            "/begin_weight_update",
            "/end_weight_update",
            "/init_weights_update_group",
            "/update_weights_from_distributed",
        ):
            return 200, {"success": True, "message": "Success"}
        if path in ("/release_memory_occupation", "/resume_memory_occupation"):
            return 200, "null"
        return 404, {"detail": "Not Found"}

    def paths(self, method=None):
        return [p for m, p, _ in self.requests if method is None or m == method]

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub_server():
    s = StubSGLangServer()
    yield s
    s.close()


@pytest.fixture
def stub_servers():
    servers = [StubSGLangServer(), StubSGLangServer()]
    yield servers
    for s in servers:
        s.close()


def tiny_config(model_type: str = "llama", **over) -> dict:
    """hidden 64, 2 layers, vocab 512 (a few hundred thousand parameters)."""
    cfg = dict(
        model_type=model_type,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
    )
    cfg.update(over)
    return cfg


@pytest.fixture(name="tiny_config")
def tiny_config_fixture():
    return tiny_config
