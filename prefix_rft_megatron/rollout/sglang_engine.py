"""SGLang engine: SGLang HTTP servers, launched here as subprocesses or attached to by URL (the GPU path).

Pinned to the HTTP API of sglang 0.5.23 (python/sglang/srt/entrypoints/http_server.py and managers/io_struct.py of
that release). sglang is never imported at module level: it pins a CUDA torch, runs in its own environment, and the
trainer only needs it in-process for the colocated CUDA-IPC weight path (see `weight_buckets`).

Endpoints used, and the payloads sent:
- GET  /health_generate                 200 once the server generates (runs one token); 503 while starting.
- POST /generate                        {"input_ids": [...], "sampling_params": {"temperature", "top_p",
                                        "max_new_tokens", "stop_token_ids", "sampling_seed", "ignore_eos",
                                        "no_stop_trim", "skip_special_tokens"}, "return_logprob": true,
                                        "logprob_start_len": -1, "stream": false}; answer {"output_ids": [...],
                                        "meta_info": {"finish_reason": {"type": "stop"|"length"|"abort", ...},
                                        "output_token_logprobs": [[logprob, token_id, null], ...], ...}}.
                                        One request per sample (n = 1), each with its own sampling_seed, so samples
                                        spread over servers and the radix cache shares the prompt.
- POST /pause_generation                {"mode": "abort"|"retract"|"in_place"}
- POST /begin_weight_update             {} (0.5.23 refuses weight loads outside a begin/end session)
- POST /update_weights_from_tensor      {"serialized_named_tensors": [b64 per TP rank], "load_format":
                                        "flattened_bucket", "flush_cache": false, "weight_version": "<step>"}
- POST /init_weights_update_group       {"master_address", "master_port", "rank_offset", "world_size",
                                        "group_name", "backend": "nccl"}
- POST /update_weights_from_distributed {"names", "dtypes", "shapes", "group_name", "load_format":
                                        "flattened_bucket", "flush_cache": false, "weight_version"}
- POST /end_weight_update               {}
- POST /flush_cache                     (no body; 400 while requests run)
- POST /continue_generation             {}
- POST /release_memory_occupation, /resume_memory_occupation   {} (no tags: weights and KV cache)
Weight-update sequence: pause -> begin -> buckets -> end -> flush_cache -> continue (flush skipped in "in_place"
mode, where running requests keep their KV cache and SGLang refuses the flush).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http.client import HTTPException
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

from ..config.validate import routable_address
from .config import RolloutConfig
from .engine import RolloutEngine, WeightBucket
from .types import Completion, GenerateRequest, SamplingParams
from .weight_buckets import distributed_update_payload, flatten_bucket, rebucket, tensor_update_body

logger = logging.getLogger(__name__)

SGLANG_API_VERSION = "0.5.23"
TRANSIENT_HTTP_CODES = (429, 502, 503, 504)


class SGLangError(RuntimeError):
    """An SGLang server refused or failed a request (not retried)."""


def api_version_matches(version: str) -> bool:
    """The server's release is SGLANG_API_VERSION (post and local builds of it, e.g. 0.5.23.post1, 0.5.23+cu130)."""
    base = version.split("+", 1)[0]
    return base == SGLANG_API_VERSION or base.startswith(SGLANG_API_VERSION + ".post")


# ---------------------------------------------------------------------------------------------------------------
# server command line and processes


def build_server_command(cfg: RolloutConfig, index: int) -> List[str]:
    """`python -m sglang.launch_server ...` for server `index` of `cfg` (GPUs base_gpu_id + index * tp_size ...)."""
    cmd = [
        cfg.server_python or sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path", cfg.model_path,
        "--tp-size", str(cfg.tp_size),
        "--base-gpu-id", str(cfg.base_gpu_id + index * cfg.tp_size),
        "--mem-fraction-static", str(cfg.mem_fraction_static),
        "--host", cfg.host,
        "--port", str(cfg.base_port + index),
        "--dtype", cfg.dtype,
        "--random-seed", str(cfg.seed),
        "--skip-tokenizer-init",  # token ids in, token ids out: the server never sees text
    ]  # fmt: skip
    if cfg.enable_memory_saver:
        cmd.append("--enable-memory-saver")
    if cfg.deterministic_inference:
        cmd.append("--enable-deterministic-inference")
    cmd.extend(cfg.extra_server_args)
    return cmd


class ServerProcess:
    """A launched server: its own process group (SGLang forks scheduler/detokenizer workers), output to a log file."""

    def __init__(self, cmd: Sequence[str], log_path: Path, env: Optional[Dict[str, str]] = None):
        self.cmd = list(cmd)
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )

    def returncode(self) -> Optional[int]:
        return self.proc.poll()

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, timeout_s), (signal.SIGKILL, 10.0)):
                try:
                    os.killpg(self.proc.pid, sig)  # the group this Popen created, nothing else
                except ProcessLookupError:
                    break
                try:
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        self._log.close()


# ---------------------------------------------------------------------------------------------------------------
# HTTP client


class HTTPClient:
    """JSON over HTTP to one server, with retries and exponential backoff for transient failures."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 3600.0,
        max_attempts: int = 5,
        backoff_s: float = 1.0,
        backoff_max_s: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.sleep = sleep

    def _once(self, method: str, path: str, payload: Any, timeout_s: float) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            body = resp.read()
        text = body.decode(errors="replace")
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return text

    def request(
        self, method: str, path: str, payload: Any = None, retry: bool = True, timeout_s: Optional[float] = None
    ) -> Any:
        attempts = self.max_attempts if retry else 1
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        last: Optional[BaseException] = None
        for attempt in range(attempts):
            try:
                return self._once(method, path, payload, timeout_s)
            except urllib.error.HTTPError as e:
                body = e.read().decode(errors="replace")[:500]
                if e.code not in TRANSIENT_HTTP_CODES:
                    raise SGLangError(f"{method} {self.url}{path} -> HTTP {e.code}: {body}") from None
                last = SGLangError(f"HTTP {e.code}: {body}")
            except (urllib.error.URLError, HTTPException, ConnectionError, TimeoutError, OSError) as e:
                last = e
            if attempt + 1 < attempts:
                delay = min(self.backoff_s * (2**attempt), self.backoff_max_s)
                logger.warning("%s %s%s failed (%s); retry %d/%d in %.1fs", method, self.url, path, last,
                               attempt + 1, attempts - 1, delay)  # fmt: skip
                self.sleep(delay)
        raise SGLangError(f"{method} {self.url}{path} failed after {attempts} attempt(s): {last}")

    def post(self, path: str, payload: Any = None, **kw) -> Any:
        return self.request("POST", path, payload, **kw)

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, None, **kw)


# ---------------------------------------------------------------------------------------------------------------
# payloads


def generate_payload(input_ids: Sequence[int], params: SamplingParams, sample_seed: int) -> Dict[str, Any]:
    """/generate body for one sample of a request."""
    sp: Dict[str, Any] = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_new_tokens": params.max_new_tokens,
        # 0.5.23 reads sampling_seed only under --enable-deterministic-inference (then the pytorch sampling backend,
        # seed 42 for requests without one, so n samples of one prompt would coincide); otherwise it is ignored.
        "sampling_seed": int(sample_seed),
        "ignore_eos": params.ignore_eos,
        "no_stop_trim": True,  # output_ids keep the matched stop token anyway (trimming is text-only); text too
        "skip_special_tokens": False,
    }
    if params.stop_token_ids:
        sp["stop_token_ids"] = list(params.stop_token_ids)
    return {
        "input_ids": list(input_ids),
        "sampling_params": sp,
        "return_logprob": True,
        "logprob_start_len": -1,  # logprobs of output tokens only
        "stream": False,
    }


def parse_generate_response(resp: Any, url: str = "") -> Completion:
    """A Completion from a /generate answer; raises SGLangError on an abort or a malformed answer."""
    if not isinstance(resp, dict) or "meta_info" not in resp or "output_ids" not in resp:
        raise SGLangError(f"{url}/generate: unexpected answer {str(resp)[:300]}")
    ids = [int(t) for t in resp["output_ids"]]
    meta = resp["meta_info"]
    fr = meta.get("finish_reason")
    kind = fr.get("type") if isinstance(fr, dict) else fr
    if kind == "abort":
        raise SGLangError(f"{url}/generate: request aborted by the server: {fr.get('message', fr)}")
    if kind not in ("stop", "length"):
        raise SGLangError(f"{url}/generate: unknown finish_reason {fr!r}")
    entries = meta.get("output_token_logprobs")
    if entries is None:
        raise SGLangError(f"{url}/generate: no output_token_logprobs in meta_info (return_logprob was sent)")
    if len(entries) != len(ids):
        raise SGLangError(f"{url}/generate: {len(entries)} logprobs for {len(ids)} output ids")
    logprobs = []
    for k, (e, t) in enumerate(zip(entries, ids)):
        lp, tok = e[0], int(e[1])
        if tok != t or lp is None:
            raise SGLangError(f"{url}/generate: logprob entry {k} is {e!r} for output token {t}")
        logprobs.append(float(lp))
    return Completion(ids, logprobs, kind)


# ---------------------------------------------------------------------------------------------------------------
# the engine


class SGLangEngine(RolloutEngine):
    def __init__(
        self,
        cfg: RolloutConfig,
        update_group_factory: Optional[Callable[..., Any]] = None,
        broadcast: Optional[Callable[[torch.Tensor, Any], None]] = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """Attach to cfg.server_urls, or launch cfg.num_servers servers; then wait until all are healthy.

        update_group_factory(master_address, master_port, world_size, rank, group_name) -> group and
        broadcast(tensor, group) replace the trainer side of the distributed weight path (defaults: sglang's
        init_custom_process_group and torch.distributed.broadcast from rank 0)."""
        self.cfg = cfg
        self.processes: List[ServerProcess] = []
        urls = list(cfg.server_urls)
        if not urls and not cfg.model_path:
            raise ValueError("rollout.model_path: required to launch SGLang servers (rollout.server_urls is empty)")
        if not urls:
            log_dir = Path(cfg.server_log_dir or tempfile.mkdtemp(prefix="sglang_logs_"))
            for i in range(cfg.num_servers):
                cmd = build_server_command(cfg, i)
                logger.info("launching SGLang server %d: %s", i, " ".join(cmd))
                self.processes.append(ServerProcess(cmd, log_dir / f"server_{i}.log"))
                urls.append(f"http://{cfg.host}:{cfg.base_port + i}")
        self.clients = [
            HTTPClient(u, cfg.request_timeout_s, cfg.max_attempts, cfg.retry_backoff_s, cfg.retry_backoff_max_s, sleep)
            for u in urls
        ]
        self._inflight = [0] * len(self.clients)
        self._rr = 0
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(cfg.max_concurrent_requests, len(self.clients) + 1))
        self._update_group_factory = update_group_factory
        self._broadcast = broadcast
        self._update_group = None
        self._closed = False
        try:
            self.wait_until_healthy(cfg.health_timeout_s, cfg.health_poll_interval_s)
            self.check_versions()
        except BaseException:
            self.shutdown()
            raise

    @property
    def urls(self) -> List[str]:
        return [c.url for c in self.clients]

    # ---- health ----

    def wait_until_healthy(self, timeout_s: float, poll_s: float = 2.0) -> None:
        deadline = time.monotonic() + timeout_s
        for i, client in enumerate(self.clients):
            proc = self.processes[i] if i < len(self.processes) else None
            last = "no answer yet"
            while True:
                if proc is not None and proc.returncode() is not None:
                    raise SGLangError(
                        f"SGLang server {i} ({client.url}) exited with code {proc.returncode()} before it became "
                        f"healthy; command: {' '.join(proc.cmd)}; last lines of {proc.log_path}:\n{proc.log_tail()}"
                    )
                left = deadline - time.monotonic()
                try:
                    client.request("GET", "/health_generate", retry=False, timeout_s=max(1.0, min(left, 60.0)))
                    break
                except SGLangError as e:
                    last = str(e)
                if time.monotonic() + poll_s > deadline:
                    where = f"; log: {proc.log_path}" if proc is not None else ""
                    raise TimeoutError(
                        f"SGLang server {client.url} not healthy after {timeout_s:g}s "
                        f"(rollout.health_timeout_s); last answer: {last}{where}"
                    )
                time.sleep(poll_s)

    def check_versions(self) -> None:
        """Every server must run the SGLang release whose HTTP API this client speaks (`SGLANG_API_VERSION`)."""
        for c in self.clients:
            version = str((c.get("/server_info") or {}).get("version", "unknown"))
            if not api_version_matches(version):
                raise SGLangError(
                    f"SGLang server {c.url} runs sglang {version}; this client is written for sglang "
                    f"{SGLANG_API_VERSION}'s HTTP API (install sglang=={SGLANG_API_VERSION} where the server runs)")

    def health(self) -> bool:
        for c in self.clients:
            try:
                c.request("GET", "/health_generate", retry=False, timeout_s=60.0)
            except SGLangError:
                return False
        return True

    # ---- generation ----

    def _pick(self) -> int:
        with self._lock:
            n = len(self.clients)
            best = min(range(n), key=lambda k: (self._inflight[(self._rr + k) % n], k))
            i = (self._rr + best) % n
            self._rr = (i + 1) % n
            self._inflight[i] += 1
            return i

    def _generate_one(self, payload: Dict[str, Any]) -> Completion:
        i = self._pick()
        try:
            client = self.clients[i]
            return parse_generate_response(client.post("/generate", payload), client.url)
        finally:
            with self._lock:
                self._inflight[i] -= 1

    def generate(self, requests: Sequence[GenerateRequest]) -> List[List[Completion]]:
        futures = []
        for req in requests:
            p = req.params
            if p.seed is None:
                p = replace(p, seed=int(torch.randint(0, 2**62, ()).item()))
            futures.append(
                [self._pool.submit(self._generate_one, generate_payload(req.input_ids, p, p.sample_seed(j)))
                 for j in range(p.n)]  # fmt: skip
            )
        return [[f.result() for f in fs] for fs in futures]

    # ---- weights ----

    def _check(self, futs, path: str) -> List[Any]:
        """Results of one call per server (in self.clients order); a {"success": false} answer is an error."""
        results = [f.result() for f in futs]
        for c, r in zip(self.clients, results):
            if isinstance(r, dict) and r.get("success") is False:
                raise SGLangError(f"POST {c.url}{path}: {r.get('message')}")
        return results

    def _all(self, path: str, payload: Any = None, retry: bool = True) -> List[Any]:
        return self._check([self._pool.submit(c.post, path, payload, retry=retry) for c in self.clients], path)

    def connect_update_group(self) -> None:
        """Distributed mode: form the NCCL group {trainer rank 0} + every server's TP ranks. Blocks until all
        joined; call once, from the trainer rank that sends the weights."""
        cfg = self.cfg
        world_size = 1 + cfg.tp_size * len(self.clients)
        # the servers dial this address: trainer rank 0's host as they can reach it
        address = cfg.update_group_master_address or routable_address(self.urls[0])
        logger.info("weight-update group: servers connect to %s:%d", address, cfg.update_group_master_port)
        futs = []
        for i, c in enumerate(self.clients):
            body = {
                "master_address": address,
                "master_port": cfg.update_group_master_port,
                "rank_offset": 1 + i * cfg.tp_size,
                "world_size": world_size,
                "group_name": cfg.update_group_name,
                "backend": "nccl",
            }
            futs.append(self._pool.submit(c.post, "/init_weights_update_group", body, retry=False))
        factory = self._update_group_factory or _default_update_group_factory
        self._update_group = factory(
            address, cfg.update_group_master_port, world_size, 0, cfg.update_group_name
        )
        self._check(futs, "/init_weights_update_group")

    def update_weights(self, buckets: Iterable[WeightBucket], version: Optional[int] = None) -> None:
        cfg = self.cfg
        if cfg.weight_sync == "distributed" and self._update_group is None:
            self.connect_update_group()
        wv = "" if version is None else str(version)
        self._all("/pause_generation", {"mode": cfg.pause_mode})
        try:
            # begin/update/end are not retried: a lost answer may hide a done step (a second begin is refused, and a
            # serialized tensor payload must not be delivered twice)
            self._all("/begin_weight_update", {}, retry=False)
            for bucket in rebucket(buckets, cfg.weight_bucket_mib * 2**20):
                if cfg.weight_sync == "tensor":
                    flat, meta = flatten_bucket(bucket)
                    futs = [  # one body per server: a serialized payload must be deserialized only once
                        self._pool.submit(c.post, "/update_weights_from_tensor",
                                          tensor_update_body(flat, meta, cfg.tp_size, False, wv), retry=False)
                        for c in self.clients
                    ]  # fmt: skip
                    self._check(futs, "/update_weights_from_tensor")
                else:
                    body, flat = distributed_update_payload(bucket, cfg.update_group_name, False, wv)
                    futs = [
                        self._pool.submit(c.post, "/update_weights_from_distributed", body, retry=False)
                        for c in self.clients
                    ]
                    (self._broadcast or _default_broadcast)(flat, self._update_group)
                    self._check(futs, "/update_weights_from_distributed")
                del flat  # the server answered: its copy is enqueued and holds its own IPC reference
            self._all("/end_weight_update", {}, retry=False)
            if cfg.pause_mode != "in_place":
                self._all("/flush_cache")
        except BaseException as e:
            raise SGLangError(
                f"weight update (version {wv or '-'}) failed; servers {self.urls} are left paused with partially "
                f"updated weights: {e}"
            ) from e
        self._all("/continue_generation", {})

    # ---- memory, shutdown ----

    def release_memory(self) -> None:
        self._all("/release_memory_occupation", {})

    def resume_memory(self) -> None:
        self._all("/resume_memory_occupation", {})

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in self.processes:
            p.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _default_update_group_factory(master_address: str, master_port: int, world_size: int, rank: int, group_name: str):
    try:
        from sglang.srt.utils import init_custom_process_group
    except ImportError as e:  # pragma: no cover - GPU path only
        raise ImportError(
            "rollout.weight_sync=distributed needs sglang in the trainer's environment (init_custom_process_group)"
        ) from e
    return init_custom_process_group(  # pragma: no cover
        backend="nccl", init_method=f"tcp://{master_address}:{master_port}", world_size=world_size, rank=rank,
        group_name=group_name,
    )  # fmt: skip


def _default_broadcast(flat: torch.Tensor, group: Any) -> None:  # pragma: no cover - GPU path only
    torch.distributed.broadcast(flat, src=0, group=group)
