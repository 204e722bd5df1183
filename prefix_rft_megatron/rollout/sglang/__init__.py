"""The SGLang rollout engine (the GPU path), one module per concern, as slime's sglang_utils splits it:

- `server`   the `sglang.launch_server` command line and the launched server processes
- `client`   JSON over HTTP to one server, with retries for transient failures
- `payloads` the request bodies and answers of the endpoints below, and the API version this client speaks
- `tensor_transport` / `distributed_transport`   the two ways new weights reach the servers
- `engine`   `SGLangEngine`: health, load-balanced generation, the weight-update session, memory, shutdown

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

from .client import HTTPClient, SGLangError, SGLangVersionError
from .engine import SGLangEngine
from .payloads import SGLANG_API_VERSION, api_version_matches, generate_payload, parse_generate_response
from .server import ServerProcess, build_server_command

__all__ = ["HTTPClient", "SGLANG_API_VERSION", "SGLangEngine", "SGLangError", "SGLangVersionError", "ServerProcess", "api_version_matches",
           "build_server_command", "generate_payload", "parse_generate_response"]
