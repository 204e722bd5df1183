"""`SGLangEngine`: SGLang HTTP servers, launched here as subprocesses or attached to by URL (see the package
docstring for the endpoints): health and version check, generation spread over the servers by fewest requests in
flight, the weight-update session around a transport, memory release and resume, shutdown."""

from __future__ import annotations

import itertools
import logging
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

from ..config import RolloutConfig
from ..engine import RolloutEngine, WeightBucket
from ..types import Completion, GenerateRequest
from ..weight_buckets import RankHandles, rebucket
from .client import HTTPClient, SGLangError, SGLangVersionError
from .distributed_transport import DistributedTransport
from .payloads import SGLANG_API_VERSION, api_version_matches, generate_payload, parse_generate_response
from .server import ServerProcess, build_server_command, server_env
from .tensor_transport import TensorTransport

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 120.0  # how long a flush waits for a scheduler to retire its last batch


class SGLangEngine(RolloutEngine):
    def __init__(
        self,
        cfg: RolloutConfig,
        update_group_factory: Optional[Callable[..., Any]] = None,
        broadcast: Optional[Callable[[torch.Tensor, Any], None]] = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """Attach to cfg.server_urls, or launch cfg.num_servers servers; then wait until all are healthy and check
        their version. `update_group_factory` and `broadcast`: see DistributedTransport."""
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
                self.processes.append(ServerProcess(cmd, log_dir / f"server_{i}.log", env=server_env()))
                urls.append(f"http://{cfg.host}:{cfg.base_port + i}")
        self.clients = [
            HTTPClient(u, cfg.request_timeout_s, cfg.max_attempts, cfg.retry_backoff_s, cfg.retry_backoff_max_s, sleep)
            for u in urls
        ]
        self._inflight = [0] * len(self.clients)
        self._rr = 0
        self._lock = threading.Lock()
        # one worker per request in flight, rollout.max_requests_per_server of them per server (_pick spreads them),
        # and one for the weight-update calls that go out while generation requests wait
        self._pool = ThreadPoolExecutor(max_workers=cfg.max_requests_per_server * len(self.clients) + 1)
        self._flush_before_generate = False
        self.transport = (TensorTransport(cfg.tp_size, cfg.base_gpu_id) if cfg.weight_sync == "tensor" else
                          DistributedTransport(cfg, update_group_factory, broadcast))
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
                raise SGLangVersionError(
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
        if self._flush_before_generate:  # after an in_place update, once this client's requests have finished
            self._flush_when_idle()
            self._flush_before_generate = False
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

    def submit(self, path: str, client: HTTPClient, payload: Any, retry: bool = False):
        return self._pool.submit(client.post, path, payload, retry=retry)

    def submit_each(self, path: str, make_body: Callable[[], Any], retry: bool = False) -> List[Any]:
        """One POST per server, each with its own body from `make_body()`; futures in self.clients order."""
        return [self.submit(path, c, make_body(), retry) for c in self.clients]

    def check(self, futs, path: str) -> List[Any]:
        return self._check(futs, path)

    def _all(self, path: str, payload: Any = None, retry: bool = True) -> List[Any]:
        return self._check([self.submit(path, c, payload, retry) for c in self.clients], path)

    def update_weights(self, buckets: Iterable[WeightBucket], version: Optional[int] = None) -> None:
        """pause -> begin -> every bucket through the transport -> end -> flush -> continue."""
        cfg = self.cfg
        wv = "" if version is None else str(version)
        if isinstance(self.transport, DistributedTransport) and self.transport.group is None:
            self.transport.connect(self)  # before the pause: servers keep generating while the group forms
        self._all("/pause_generation", {"mode": cfg.pause_mode})
        try:
            # begin/update/end are not retried: a lost answer may hide a done step (a second begin is refused, and a
            # serialized tensor payload must not be delivered twice)
            self._all("/begin_weight_update", {}, retry=False)
            for bucket in _stream(buckets, cfg.weight_bucket_mib * 2**20):
                self.transport.send(self, bucket, wv)
            self._all("/end_weight_update", {}, retry=False)
            if cfg.pause_mode != "in_place":
                self._all("/flush_cache")
            else:
                # the requests kept running refuse a flush now, but the radix cache must not serve the old
                # weights' KV to new requests (measured: a real server then generates from stale prefixes)
                self._flush_before_generate = True
        except BaseException as e:
            raise SGLangError(
                f"weight update (version {wv or '-'}) failed; servers {self.urls} are left paused with partially "
                f"updated weights: {e}"
            ) from e
        self._all("/continue_generation", {})

    # ---- memory, shutdown ----

    def _flush_when_idle(self) -> None:
        """Flush the radix cache once each scheduler is idle. The last responses of a rollout reach us before the
        scheduler has retired their batch; sglang 0.5.23 asserts idleness in release_memory_occupation and dies
        otherwise (measured: the server exited mid-run), while flush_cache?timeout= waits for it."""
        self._all(f"/flush_cache?timeout={IDLE_WAIT_S:g}")

    def release_memory(self) -> None:
        self._flush_when_idle()  # the KV cache is being released anyway
        self._all("/release_memory_occupation", {})

    def resume_memory(self, part: Optional[str] = None) -> None:
        """sglang 0.5.23's tags: "weights"; "kv_cache" with "cuda_graph" (the graphs' buffers come back with the cache,
        as slime resumes them); none for all."""
        tags = {"weights": ["weights"], "kv_cache": ["kv_cache", "cuda_graph"], None: None}[part]
        self._all("/resume_memory_occupation", {} if tags is None else {"tags": tags})

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.transport.close()
        for p in self.processes:
            p.stop()
        self._pool.shutdown(wait=False, cancel_futures=True)


def _stream(buckets: Iterable, max_bytes: int):
    """Plain buckets regrouped to rollout.weight_bucket_mib; per-rank handles (already bucketed and serialized by every
    trainer rank) as they come."""
    buckets = iter(buckets)
    first = next(buckets, None)
    if first is None:
        return
    if isinstance(first, RankHandles):
        yield first
        yield from buckets
        return
    yield from rebucket(itertools.chain([first], buckets), max_bytes)
