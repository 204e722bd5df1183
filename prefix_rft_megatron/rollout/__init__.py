"""Rollout engines: token ids in, token ids + log-probs out; weights in as HF-layout buckets.

Heavy or optional dependencies (transformers, sglang) are imported by the engine modules, not here.
"""

from .config import RolloutConfig
from .engine import GroupSpec, RolloutEngine, build_engine, build_group_requests, generate_group, generate_groups
from .types import Completion, GenerateRequest, Rollout, RolloutKind, SamplingParams, by_group, derive_seed

__all__ = [
    "Completion",
    "GenerateRequest",
    "GroupSpec",
    "Rollout",
    "RolloutConfig",
    "RolloutEngine",
    "RolloutKind",
    "SamplingParams",
    "build_engine",
    "build_group_requests",
    "by_group",
    "derive_seed",
    "generate_group",
    "generate_groups",
]
