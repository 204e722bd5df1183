"""The /generate request body and answer, and the SGLang release whose HTTP API this client speaks (the endpoint list
is in the package docstring)."""

from __future__ import annotations

from typing import Any, Dict, Sequence

from ..types import Completion, SamplingParams
from .client import SGLangError

SGLANG_API_VERSION = "0.5.23"


def api_version_matches(version: str) -> bool:
    """The server's release is SGLANG_API_VERSION (post and local builds of it, e.g. 0.5.23.post1, 0.5.23+cu130)."""
    base = version.split("+", 1)[0]
    return base == SGLANG_API_VERSION or base.startswith(SGLANG_API_VERSION + ".post")


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
