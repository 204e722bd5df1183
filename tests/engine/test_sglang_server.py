"""SGLangEngine against a real sglang 0.5.23 server (CPU engine): launched by the project's launcher, attached by
URL, generation with input_ids and log-probs against the HF engine on the same weights, stop tokens, prefixed groups,
the tensor weight update (pause -> begin -> buckets -> end -> flush -> continue) in every pause mode, memory release.

Not here, because a CPU cannot run them: the colocated CUDA-IPC handles of `rollout.weight_sync=tensor` on GPUs (on
CPU the same endpoint gets the tensor by value), `rollout.weight_sync=distributed` (the servers join an NCCL group),
and seeded sampling: sglang honours `sampling_seed` only with --enable-deterministic-inference, which refuses the CPU
attention backend (torch_native); the client's per-sample seeds are checked against the stand-in (tests/rollout).
"""

import pytest
import torch

from conftest import CPU_SERVER_ARGS, SGLANG_PYTHON, server_ports
from prefix_rft_megatron.rollout import GenerateRequest, GroupSpec, RolloutConfig, SamplingParams, generate_groups
from prefix_rft_megatron.rollout.hf_engine import HFEngine
from prefix_rft_megatron.rollout.sglang import SGLangEngine

# fp32 on both sides; the two engines run other kernels (sglang's torch_native attention, HF's SDPA): round-off only.
# Measured ~3e-6 on the demo's base (2026-12-02, this CPU).
LOGPROB_TOL = 1e-4
PROMPTS = [[1, 341, 269, 23, 270, 269, 18, 203], [1, 5, 6, 7, 8, 9, 10, 11, 12], list(range(20, 60))]


@pytest.fixture(scope="module")
def server(policy, tmp_path_factory):
    cfg = RolloutConfig(engine="sglang", model_path=str(policy), server_python=SGLANG_PYTHON, dtype="float32",
                        base_port=server_ports(), extra_server_args=list(CPU_SERVER_ARGS), health_timeout_s=300,
                        server_log_dir=str(tmp_path_factory.mktemp("sglang_logs")),
                        enable_memory_saver=False)  # torch_memory_saver is a CUDA library
    engine = SGLangEngine(cfg)  # launches, waits for /health_generate, checks the server's version
    yield engine
    engine.shutdown()
    assert engine.processes[0].returncode() is not None  # stopped


@pytest.fixture(scope="module")
def hf(policy):
    from transformers import AutoModelForCausalLM

    return HFEngine(AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32))


def _greedy(n=16, stop=(), ignore_eos=True):
    # ignore_eos (fixed lengths) by default; it also disables stop_token_ids, on the server as in the HF engine
    return SamplingParams(n=1, temperature=0.0, max_new_tokens=n, stop_token_ids=tuple(stop), seed=1,
                          ignore_eos=ignore_eos)


def _assert_same(a, b):
    for x, y in zip(a, b):
        for c, d in zip(x, y):
            assert c.token_ids == d.token_ids and c.finish_reason == d.finish_reason
            assert max(abs(u - v) for u, v in zip(c.logprobs, d.logprobs)) <= LOGPROB_TOL


def test_launched_and_attached_engines_generate_what_hf_generates(server, hf):
    reqs = [GenerateRequest(p, _greedy()) for p in PROMPTS]
    launched = server.generate(reqs)
    attached = SGLangEngine(RolloutConfig(engine="sglang", server_urls=server.urls, health_timeout_s=30))
    try:
        assert attached.health()
        _assert_same(attached.generate(reqs), launched)
    finally:
        attached.shutdown()
    _assert_same(launched, hf.generate(reqs))  # greedy: identical tokens, log-probs to round-off
    assert all(len(c.token_ids) == 16 and c.finish_reason == "length" for g in launched for c in g)


def test_stop_token_ends_a_sample_and_is_kept(server, hf):
    free = hf.generate([GenerateRequest(PROMPTS[1], _greedy())])[0][0].token_ids
    stop = free[5]  # a token the greedy continuation reaches at position 5 (or earlier, if it repeats)
    got = server.generate([GenerateRequest(PROMPTS[1], _greedy(stop=[stop], ignore_eos=False))])[0][0]
    first = free.index(stop)
    assert got.token_ids == free[:first + 1] and got.finish_reason == "stop"
    # with ignore_eos, SGLang 0.5.23 ignores stop_token_ids as well (the HF engine follows it)
    both = [GenerateRequest(PROMPTS[1], _greedy(stop=[stop]))]
    assert server.generate(both)[0][0].token_ids == hf.generate(both)[0][0].token_ids == free


def test_sampled_logprobs_are_the_full_distribution_ones(server, hf):
    """Temperature 1, no seed guarantee across engines: the server's log-prob of each sampled token equals the HF
    model's log_softmax(logits / T) of that token in that context."""
    params = SamplingParams(n=4, temperature=0.8, max_new_tokens=12, seed=3, ignore_eos=True)
    comps = server.generate([GenerateRequest(PROMPTS[0], params)])[0]
    assert len(comps) == 4 and len({tuple(c.token_ids) for c in comps}) > 1  # the samples differ
    for c in comps:
        ids = torch.tensor([PROMPTS[0] + c.token_ids])
        with torch.no_grad():
            logits = hf.model(ids).logits[0, len(PROMPTS[0]) - 1:-1].float()
        ref = torch.log_softmax(logits / 0.8, -1).gather(-1, torch.tensor(c.token_ids)[:, None])[:, 0]
        assert (torch.tensor(c.logprobs) - ref).abs().max().item() <= LOGPROB_TOL


def test_prefixed_group_continues_the_demonstration(server, hf):
    demo = list(range(100, 120))
    groups = [GroupSpec(0, tuple(PROMPTS[0]), tuple(demo), 3, (4, 11))]
    params = _greedy(8)
    got, want = generate_groups(server, groups, params), generate_groups(hf, groups, params)
    assert [r.kind.value for r in got[0]] == ["on_policy", "prefixed", "prefixed"]
    for a, b in zip(got[0], want[0]):
        assert a.prefix_ids == b.prefix_ids and a.response_ids == b.response_ids
        assert max(abs(u - v) for u, v in zip(a.response_logprobs, b.response_logprobs)) <= LOGPROB_TOL


@pytest.mark.parametrize("pause_mode", ["abort", "retract", "in_place"])
def test_tensor_weight_update_takes_effect(server, hf, pause_mode):
    """New weights in one bucket each way: the server then generates what an HF model with those weights does."""
    g = torch.Generator().manual_seed({"abort": 1, "retract": 2, "in_place": 3}[pause_mode])
    new = {k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in hf.model.state_dict().items()
           if k != "lm_head.weight"}  # tied to embed_tokens
    server.cfg.pause_mode = pause_mode
    server.cfg.weight_bucket_mib = 1  # several buckets
    server.update_weights([list(new.items())], version=7)
    hf.update_weights([list(new.items())], version=7)
    reqs = [GenerateRequest(p, _greedy()) for p in PROMPTS]
    _assert_same(server.generate(reqs), hf.generate(reqs))
    assert server.health()


def test_release_and_resume_memory(server, hf):
    """The release/resume endpoints answer on the CPU engine (without --enable-memory-saver, whose
    torch_memory_saver is a CUDA library, they free nothing), and generation afterwards still matches."""
    server.release_memory()
    server.resume_memory()
    reqs = [GenerateRequest(PROMPTS[0], _greedy())]
    _assert_same(server.generate(reqs), hf.generate(reqs))
