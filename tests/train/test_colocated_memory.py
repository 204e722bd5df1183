"""A colocated engine gets its memory back only after the trainer's cached CUDA blocks are returned: the caching
allocator keeps freed activations reserved, and SGLang needs as much free as when it started (this CPU machine has
no CUDA: torch.cuda's two calls are recorded in their place)."""

import torch

from prefix_rft_megatron.train.loop import hand_memory_back


class RecordingEngine:
    def __init__(self, calls):
        self.calls = calls

    def resume_memory(self):
        self.calls.append("engine.resume_memory")


def test_cache_emptied_before_the_engine_resumes(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("torch.cuda.empty_cache"))
    hand_memory_back(RecordingEngine(calls))
    assert calls == ["torch.cuda.empty_cache", "engine.resume_memory"]


def test_without_cuda_the_engine_just_resumes(monkeypatch):
    calls = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("torch.cuda.empty_cache"))
    hand_memory_back(RecordingEngine(calls))
    assert calls == ["engine.resume_memory"]
