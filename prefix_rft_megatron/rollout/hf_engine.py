"""Hugging Face engine: a transformers causal LM in the trainer's process (CPU tests, the demo).

The model is built from an HF config (a dict with `model_type`, a local directory, or a `PretrainedConfig`); nothing
is downloaded. Weights arrive through `update_weights` in the same HF-layout buckets the SGLang engine gets.

Sampling is a loop over tokens with the KV cache, written here (not `generate`) so that the returned log-probs are
exactly the ones the trainer defines: `log_softmax(logits.float() / temperature)` over the full vocabulary, before
top-p truncation (SGLang 0.5.23's convention, see `types`). The whole batch samples at once: the uniform that draws
token t of a sample is the t-th output of a splitmix64 stream seeded with `derive_seed(request seed, sample index)`
(counter-based, so no generator object per sample), prompts are left-padded with an attention mask and explicit
position ids, and finished samples leave the batch (and their KV cache rows) at once; so a request's samples do not
depend on what else is in the batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Union

import numpy as np
import torch

from .engine import RolloutEngine, WeightBucket
from .types import Completion, GenerateRequest, SamplingParams

logger = logging.getLogger(__name__)

HFConfigLike = Union[Mapping, str, os.PathLike, "transformers.PretrainedConfig"]  # noqa: F821

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_hf_config(config: HFConfigLike):
    """A transformers config from a dict (needs `model_type`, e.g. "llama", "qwen2"), a local directory holding
    config.json, or a config object. Never touches the network."""
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    if isinstance(config, (str, os.PathLike)):
        path = Path(config)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"HF config: {path / 'config.json'} does not exist")
        return AutoConfig.from_pretrained(str(path), local_files_only=True)
    if isinstance(config, Mapping):
        d = dict(config)
        model_type = d.pop("model_type", None)
        if model_type is None:
            raise ValueError("HF config dict: missing 'model_type' (e.g. 'llama' or 'qwen2')")
        return AutoConfig.for_model(model_type, **d)
    raise TypeError(f"HF config: expected a dict, a directory or a PretrainedConfig, got {type(config).__name__}")


def build_hf_model(config: HFConfigLike, dtype: torch.dtype = torch.float32, attn_implementation: str = "sdpa"):
    """A randomly initialised causal LM (LlamaForCausalLM, Qwen2ForCausalLM, ...) for `config`, in eval mode."""
    from transformers import AutoModelForCausalLM

    cfg = load_hf_config(config)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)
    return model.to(dtype).eval()


def eos_ids_of(config) -> List[int]:
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos])]


_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def counter_uniforms(seeds: Sequence[int], counters: Sequence[int]) -> torch.Tensor:
    """float64 uniforms in [0, 1): element i is output number counters[i] (from 0) of the splitmix64 generator seeded
    with seeds[i]. A pure function of (seed, counter): the draw of a sample's t-th token needs no state."""
    with np.errstate(over="ignore"):
        z = np.asarray(seeds, dtype=np.uint64) + (np.asarray(counters, dtype=np.uint64) + np.uint64(1)) * _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z >> np.uint64(11)).astype(np.float64) * 2.0**-53)


def sample_tokens(logits: torch.Tensor, temperature: torch.Tensor, top_p: torch.Tensor, uniforms: torch.Tensor):
    """(token ids [B], log-probs [B]) for next-token logits [B, V]; row b draws with uniforms[b] (float64 in [0, 1))
    at temperature[b] (0: greedy) and nucleus top_p[b]. Every operation works row by row, so a row's result does not
    depend on the other rows.

    Top-p keeps the tokens whose cumulative probability *before* them (sorted descending) is <= top_p, as SGLang's
    torch sampler does; the draw is from the renormalised nucleus, the log-prob is from the full distribution."""
    logits = logits.float()
    greedy = temperature == 0
    t = torch.where(greedy, torch.ones_like(temperature), temperature).float()
    logp = torch.log_softmax(logits / t[:, None], dim=-1)
    probs = logp.exp()
    if bool((top_p < 1.0).any()):
        sorted_p, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        drop = (torch.cumsum(sorted_p, dim=-1) - sorted_p) > top_p[:, None].float()
        probs = torch.zeros_like(probs).scatter_(1, order, sorted_p.masked_fill(drop, 0.0))
    cdf = torch.cumsum(probs, dim=-1)
    target = (uniforms * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    tok = torch.searchsorted(cdf, target, right=True)[:, 0].clamp(max=probs.shape[-1] - 1)
    for b in torch.nonzero(probs.gather(1, tok[:, None])[:, 0] == 0.0).flatten().tolist():
        while probs[b, tok[b]] == 0.0:  # only reachable through float rounding at the very top of the cdf
            tok[b] -= 1
    if bool(greedy.any()):
        tok = torch.where(greedy, torch.argmax(logits, dim=-1), tok)
        logp = torch.where(greedy[:, None], torch.log_softmax(logits, dim=-1), logp)
    return tok, logp.gather(1, tok[:, None])[:, 0]


@dataclass
class _Row:
    request: int
    sample: int
    input_ids: Sequence[int]
    params: SamplingParams
    seed: int


class HFEngine(RolloutEngine):
    def __init__(self, model, max_batch_size: int = 64, eos_token_ids: Optional[Sequence[int]] = None):
        self.model = model.eval()
        self.max_batch_size = int(max_batch_size)
        self.eos_token_ids: List[int] = list(eos_token_ids) if eos_token_ids is not None else eos_ids_of(model.config)
        pad = getattr(model.config, "pad_token_id", None)
        self.pad_token_id = int(pad) if pad is not None else (self.eos_token_ids[0] if self.eos_token_ids else 0)
        self.weight_version: Optional[int] = None
        self._device = next(model.parameters()).device
        self._released = False

    @classmethod
    def from_config(
        cls,
        config: HFConfigLike,
        dtype: torch.dtype = torch.float32,
        attn_implementation: str = "sdpa",
        max_batch_size: int = 64,
    ) -> "HFEngine":
        return cls(build_hf_model(config, dtype, attn_implementation), max_batch_size=max_batch_size)

    @classmethod
    def from_rollout_config(cls, config: HFConfigLike, cfg) -> "HFEngine":
        return cls.from_config(config, _DTYPES[cfg.hf_dtype], cfg.hf_attn_implementation, cfg.hf_max_batch_size)

    # ---- generation ----

    def generate(self, requests: Sequence[GenerateRequest]) -> List[List[Completion]]:
        rows: List[_Row] = []
        for r, req in enumerate(requests):
            base = req.params.seed if req.params.seed is not None else int(torch.randint(0, 2**62, ()).item())
            seeded = req.params if req.params.seed is not None else replace(req.params, seed=base)
            for j in range(req.params.n):
                rows.append(_Row(r, j, req.input_ids, seeded, seeded.sample_seed(j)))
        out: List[List[Optional[Completion]]] = [[None] * req.params.n for req in requests]
        for start in range(0, len(rows), self.max_batch_size):
            chunk = rows[start : start + self.max_batch_size]
            for row, comp in zip(chunk, self._generate_rows(chunk)):
                out[row.request][row.sample] = comp
        return out  # type: ignore[return-value]

    @torch.no_grad()
    def _generate_rows(self, rows: Sequence[_Row]) -> List[Completion]:
        from transformers import DynamicCache

        if self._released:
            raise RuntimeError("HFEngine.generate after release_memory(): call resume_memory() first")
        dev = self._device
        B = len(rows)
        T = max(len(r.input_ids) for r in rows)
        input_ids = torch.full((B, T), self.pad_token_id, dtype=torch.long, device=dev)
        attn = torch.zeros((B, T), dtype=torch.long, device=dev)
        for i, r in enumerate(rows):  # left padding: every row's last prompt token is at column T-1
            input_ids[i, T - len(r.input_ids) :] = torch.tensor(r.input_ids, dtype=torch.long)
            attn[i, T - len(r.input_ids) :] = 1
        positions = (attn.cumsum(-1) - 1).clamp(min=0)  # each row's positions start at 0 at its first real token
        stops: List[Set[int]] = [
            set() if r.params.ignore_eos else set(r.params.stop_token_ids) | set(self.eos_token_ids) for r in rows
        ]
        temperature = torch.tensor([r.params.temperature for r in rows], dtype=torch.float32)
        top_p = torch.tensor([r.params.top_p for r in rows], dtype=torch.float32)
        seeds = [r.seed for r in rows]
        tokens: List[List[int]] = [[] for _ in rows]
        logps: List[List[float]] = [[] for _ in rows]
        reasons: List[Optional[str]] = [None] * B

        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids, attention_mask=attn, position_ids=positions, past_key_values=cache, use_cache=True
        )
        active = list(range(B))  # rows still generating, in batch order (the model's batch holds only these)
        next_pos = positions[:, -1] + 1
        step = 0
        while True:
            idx = torch.tensor(active)
            toks, lps = sample_tokens(out.logits[:, -1, :].cpu(), temperature[idx], top_p[idx],
                                      counter_uniforms([seeds[i] for i in active], [step] * len(active)))
            still = []
            for k, (i, tok, lp) in enumerate(zip(active, toks.tolist(), lps.tolist())):
                tokens[i].append(tok)
                logps[i].append(lp)
                if tok in stops[i]:
                    reasons[i] = "stop"
                elif len(tokens[i]) >= rows[i].params.max_new_tokens:
                    reasons[i] = "length"
                else:
                    still.append(k)
            if not still:
                break
            if len(still) < len(active):  # finished rows leave the batch and the KV cache
                keep = torch.tensor(still, device=dev)
                cache.batch_select_indices(keep)
                attn, next_pos, toks = attn[keep], next_pos[keep], toks[keep.cpu()]
                active = [active[k] for k in still]
            attn = torch.cat([attn, torch.ones((len(active), 1), dtype=attn.dtype, device=dev)], dim=1)
            out = self.model(
                input_ids=toks[:, None].to(dev),
                attention_mask=attn,
                position_ids=next_pos[:, None],
                past_key_values=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
            step += 1
        return [Completion(tokens[i], logps[i], reasons[i]) for i in range(B)]  # type: ignore[arg-type]

    # ---- weights ----

    def update_weights(self, buckets: Iterable[WeightBucket], version: Optional[int] = None) -> None:
        """Copy each (hf_name, tensor) into the model parameter of that name, in place (dtype cast, no realloc).

        Each bucket is checked whole (names, shapes) before any of it is copied; an error in bucket k leaves buckets
        < k applied. Tied parameters (lm_head / embed_tokens) accept either name."""
        targets: Dict[str, torch.Tensor] = dict(self.model.state_dict(keep_vars=True))
        n = 0
        with torch.no_grad():
            for bucket in buckets:
                bucket = list(bucket)
                for name, t in bucket:
                    if name not in targets:
                        known = ", ".join(sorted(targets)[:4])
                        raise KeyError(
                            f"weight update: {name!r} is not a parameter of {type(self.model).__name__} "
                            f"(it has {len(targets)}, e.g. {known}, ...)"
                        )
                    if tuple(t.shape) != tuple(targets[name].shape):
                        raise ValueError(
                            f"weight update: {name!r} has shape {tuple(t.shape)}, the model expects "
                            f"{tuple(targets[name].shape)}"
                        )
                for name, t in bucket:
                    targets[name].copy_(t)
                    n += 1
        self.weight_version = version
        logger.debug("HFEngine: updated %d tensors (version %s)", n, version)

    # ---- memory, health, shutdown ----

    def release_memory(self) -> None:
        """On an accelerator, move the model to CPU; on CPU nothing is freed (the flag only guards generate)."""
        if self._device.type != "cpu":
            self.model.to("cpu")
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        self._released = True

    def resume_memory(self, part: Optional[str] = None) -> None:
        """The model's weights are all it holds (no KV cache between calls): "kv_cache" has nothing to take back."""
        if part == "kv_cache":
            return
        if self._device.type != "cpu":
            self.model.to(self._device)
        self._released = False

    def health(self) -> bool:
        return self.model is not None and not self._released

    def shutdown(self) -> None:
        self.model = None
