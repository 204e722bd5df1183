"""JSON over HTTP to one SGLang server, with retries and exponential backoff for transient failures."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from http.client import HTTPException
from typing import Any, Callable, Optional

logger = logging.getLogger(__name__)

TRANSIENT_HTTP_CODES = (429, 502, 503, 504)


class SGLangError(RuntimeError):
    """An SGLang server refused or failed a request (not retried)."""


class SGLangVersionError(SGLangError, ValueError):
    """The server runs another sglang release than the client speaks (a user's install: one line, no traceback)."""


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
