"""A colocated engine takes its memory back in slime's order after a step (train/colocated.py): every rank's cached
CUDA blocks returned, a barrier, the engine's weights, the sync, the sync's blocks returned, a barrier, the KV cache.
This CPU machine has no CUDA: torch.cuda's calls and the collectives are recorded in their place."""

import torch

from prefix_rft_megatron.train import colocated


class RecordingEngine:
    def __init__(self, calls):
        self.calls = calls

    def resume_memory(self, part=None):
        self.calls.append(f"engine.resume_memory({part})")


class RecordingSync:
    def __init__(self, calls):
        self.calls = calls

    def sync(self, version):
        self.calls.append(f"sync(v{version})")
        return "stats"


def _record(monkeypatch, calls, cuda=True):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    monkeypatch.setattr(colocated.collectives, "barrier", lambda group=None: calls.append("barrier"))


def test_owner_rank_order(monkeypatch):
    calls = []
    _record(monkeypatch, calls)
    assert colocated.sync_into_colocated_engine(RecordingEngine(calls), RecordingSync(calls), 3) == "stats"
    assert calls == ["empty_cache", "barrier", "engine.resume_memory(weights)", "barrier", "sync(v3)",
                     "empty_cache", "barrier", "engine.resume_memory(kv_cache)"]


def test_every_other_rank_empties_its_cache_and_meets_the_barriers(monkeypatch):
    calls = []
    _record(monkeypatch, calls)
    colocated.sync_into_colocated_engine(None, RecordingSync(calls), 3)
    assert calls == ["empty_cache", "barrier", "barrier", "sync(v3)", "empty_cache", "barrier"]


def test_without_cuda_nothing_is_emptied(monkeypatch):
    calls = []
    _record(monkeypatch, calls, cuda=False)
    colocated.sync_into_colocated_engine(RecordingEngine(calls), RecordingSync(calls), 1)
    assert "empty_cache" not in calls and calls.count("barrier") == 3


def test_sglang_resume_tags():
    """The tags sglang 0.5.23's resume_memory_occupation takes (sglang/srt/constants.py), per part."""
    from prefix_rft_megatron.rollout.sglang.engine import SGLangEngine

    sent = []
    engine = SGLangEngine.__new__(SGLangEngine)
    engine._all = lambda path, payload=None, retry=True: sent.append((path, payload))
    for part in ("weights", "kv_cache", None):
        engine.resume_memory(part)
    assert sent == [("/resume_memory_occupation", {"tags": ["weights"]}),
                    ("/resume_memory_occupation", {"tags": ["kv_cache", "cuda_graph"]}),
                    ("/resume_memory_occupation", {})]
