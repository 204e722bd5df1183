"""HF engine: sampling against a full-forward reference, batching invariance, stops, prefixed groups, weight loads.

Tolerance: engine log-probs (incremental decoding with a KV cache, left-padded batch) vs a full forward pass of
prompt + response, both fp32: 1e-5 absolute (observed ~1e-6)."""

import collections

import pytest
import torch

from prefix_rft_megatron.rollout import GenerateRequest, GroupSpec, SamplingParams, generate_group, generate_groups
from prefix_rft_megatron.rollout.hf_engine import (
    HFEngine,
    build_hf_model,
    counter_uniforms,
    load_hf_config,
    sample_tokens,
)

TOL = 1e-5


def make_engine(cfg, seed=0, **kw):
    torch.manual_seed(seed)
    return HFEngine(build_hf_model(cfg), **kw)


def reference_logprobs(model, context, response, temperature):
    """log_softmax(logits / T) (T = 1 for greedy) of each response token, from one full forward pass."""
    ids = torch.tensor([list(context) + list(response)])
    with torch.no_grad():
        logits = model(ids).logits[0].float()
    T = temperature if temperature > 0 else 1.0
    logp = torch.log_softmax(logits / T, dim=-1)[len(context) - 1 : -1]
    return logp.gather(-1, torch.tensor(response)[:, None])[:, 0], logits[len(context) - 1 : -1]


REQS = [
    ([5, 6, 7, 8, 9, 10, 11], SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=7)),
    ([3, 4], SamplingParams(n=1, temperature=0.7, top_p=0.9, max_new_tokens=10, seed=3)),
    (list(range(20, 41)), SamplingParams(n=3, temperature=1.3, max_new_tokens=8, seed=11)),
    ([100, 200, 300], SamplingParams(n=1, temperature=0.0, max_new_tokens=9, seed=1)),
]


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_batched_equals_unbatched_and_logprobs_match_full_forward(tiny_config, model_type):
    eng = make_engine(tiny_config(model_type))
    reqs = [GenerateRequest(ids, p) for ids, p in REQS]
    batched = eng.generate(reqs)
    alone = [eng.generate([r])[0] for r in reqs]
    eng.max_batch_size = 2  # chunking changes nothing either
    chunked = eng.generate(reqs)
    for r, b, a, c in zip(reqs, batched, alone, chunked):
        assert len(b) == r.params.n
        for x, y, z in zip(b, a, c):
            assert x.token_ids == y.token_ids == z.token_ids
            assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) < TOL
            ref, _ = reference_logprobs(eng.model, r.input_ids, x.token_ids, r.params.temperature)
            torch.testing.assert_close(torch.tensor(x.logprobs), ref, atol=TOL, rtol=0)
    # the n samples of a request differ (own seeds), and a different seed gives a different sample
    assert batched[0][0].token_ids != batched[0][1].token_ids
    other = eng.generate([GenerateRequest(REQS[0][0], SamplingParams(n=1, max_new_tokens=12, seed=8))])[0][0]
    assert other.token_ids != batched[0][0].token_ids


def test_greedy_is_argmax_and_tiny_top_p_is_greedy(tiny_config):
    eng = make_engine(tiny_config())
    prompt = [7, 8, 9, 10]
    g = eng.generate([GenerateRequest(prompt, SamplingParams(temperature=0.0, max_new_tokens=10))])[0][0]
    _, logits = reference_logprobs(eng.model, prompt, g.token_ids, 0.0)
    assert g.token_ids == logits.argmax(-1).tolist()
    p = eng.generate([GenerateRequest(prompt, SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=10, seed=5))])
    assert p[0][0].token_ids == g.token_ids
    # the log-prob stays the full-distribution one (pre top-p, post temperature), not log(1) of the nucleus
    ref, _ = reference_logprobs(eng.model, prompt, g.token_ids, 1.0)
    torch.testing.assert_close(torch.tensor(p[0][0].logprobs), ref, atol=TOL, rtol=0)
    assert max(p[0][0].logprobs) < -1e-3


def test_sampled_tokens_lie_in_the_top_p_nucleus(tiny_config):
    eng = make_engine(tiny_config())
    prompt = [11, 12, 13]
    T, top_p = 0.8, 0.3
    params = SamplingParams(n=6, temperature=T, top_p=top_p, max_new_tokens=10, seed=2)
    outs = eng.generate([GenerateRequest(prompt, params)])
    for c in outs[0]:
        _, logits = reference_logprobs(eng.model, prompt, c.token_ids, T)
        probs = torch.softmax(logits / T, -1)
        for pos, tok in enumerate(c.token_ids):
            p_sorted, order = probs[pos].sort(descending=True)
            before = torch.cumsum(p_sorted, 0) - p_sorted
            nucleus = set(order[before <= top_p].tolist())
            assert tok in nucleus and len(nucleus) < probs.shape[-1]


def test_sample_token_frequencies_follow_temperature_and_top_p():
    logits = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0])
    T, top_p, n = 2.0, 0.65, 6000  # cumulative mass before tokens: 0, .37, .60, .78, .92
    p = torch.softmax(logits / T, -1)
    keep = (torch.cumsum(p, 0) - p) <= top_p  # p is already sorted descending here
    expected = torch.where(keep, p, torch.zeros_like(p))
    expected = expected / expected.sum()
    # n draws of one seed's stream, all in one batch: the counter-based uniforms must be uniform for this to hold
    toks, lps = sample_tokens(logits.expand(n, -1), torch.full((n,), T), torch.full((n,), top_p),
                              counter_uniforms([12345] * n, range(n)))
    counts = collections.Counter(toks.tolist())
    freq = torch.tensor([counts[i] / n for i in range(5)])
    assert keep.tolist() == [True, True, True, False, False] and counts[3] == counts[4] == 0
    torch.testing.assert_close(freq, expected, atol=0.025, rtol=0)  # ~4 standard errors
    torch.testing.assert_close(lps, torch.log_softmax(logits / T, -1)[toks], atol=1e-6, rtol=0)


def test_counter_uniforms_are_splitmix64_and_depend_only_on_seed_and_counter():
    """The t-th output of splitmix64 (Steele et al.; the reference C code, written out in Python ints)."""
    def splitmix64(seed, t):
        z = (seed + (t + 1) * 0x9E3779B97F4A7C15) % 2**64
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
        return ((z ^ (z >> 31)) >> 11) * 2.0**-53

    seeds, counters = [0, 1, 2**63 - 1, 987654321] * 2, [0, 5, 7, 100000, 3, 0, 1, 2**40]
    got = counter_uniforms(seeds, counters)
    assert got.tolist() == [splitmix64(s, t) for s, t in zip(seeds, counters)]
    assert bool(((got >= 0) & (got < 1)).all())
    u = counter_uniforms([7] * 20000, range(20000))
    assert abs(float(u.mean()) - 0.5) < 0.01 and abs(float(u.var()) - 1 / 12) < 0.005


def test_a_row_samples_the_same_whatever_the_other_rows():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(6, 50, generator=g) * 3
    T = torch.tensor([1.0, 0.7, 0.0, 1.3, 1.0, 0.5])
    top_p = torch.tensor([1.0, 0.9, 1.0, 0.5, 0.2, 1.0])
    u = counter_uniforms([11, 12, 13, 14, 15, 16], [4] * 6)
    toks, lps = sample_tokens(logits, T, top_p, u)
    for b in range(6):
        t1, l1 = sample_tokens(logits[b:b + 1], T[b:b + 1], top_p[b:b + 1], u[b:b + 1])
        assert t1.item() == toks[b].item() and l1.item() == lps[b].item()


def test_stop_ids_eos_and_finish_reasons(tiny_config):
    eng = make_engine(tiny_config())
    stops = tuple(range(0, 512, 3))  # a third of the vocabulary: stops within a few tokens
    out = eng.generate([GenerateRequest([5, 6, 7], 
        SamplingParams(n=4, max_new_tokens=40, stop_token_ids=stops, seed=1))])
    for c in out[0]:
        assert c.finish_reason == "stop" and c.token_ids[-1] in stops
        assert not set(c.token_ids[:-1]) & set(stops)
    free = eng.generate([GenerateRequest([5, 6, 7], SamplingParams(n=2, max_new_tokens=7, seed=1))])[0]
    assert all(c.finish_reason == "length" and len(c.token_ids) == 7 for c in free)

    eos_eng = HFEngine(eng.model, eos_token_ids=list(stops))
    eos_out = eos_eng.generate([GenerateRequest([5, 6, 7], SamplingParams(n=3, max_new_tokens=40, seed=1))])[0]
    assert [c.token_ids for c in eos_out] == [c.token_ids for c in out[0][:3]]  # same seeds, EOS = those ids
    no_eos = SamplingParams(n=3, max_new_tokens=40, seed=1, ignore_eos=True)
    ignored = eos_eng.generate([GenerateRequest([5, 6, 7], no_eos)])[0]
    assert all(c.finish_reason == "length" and len(c.token_ids) == 40 for c in ignored)
    assert any(set(c.token_ids) & set(stops) for c in ignored)
    # ignore_eos ignores stop_token_ids too, as SGLang 0.5.23 does (tests/engine checks the real server)
    both = SamplingParams(n=3, max_new_tokens=40, seed=1, ignore_eos=True, stop_token_ids=tuple(stops))
    assert [c.token_ids for c in eng.generate([GenerateRequest([5, 6, 7], both)])[0]] == [c.token_ids for c in ignored]


def test_prefixed_group_keeps_prefix_out_of_the_response(tiny_config):
    eng = make_engine(tiny_config())
    prompt, demo = [4, 5, 6, 7], list(range(100, 130))
    params = SamplingParams(temperature=1.0, max_new_tokens=12, seed=99)
    rolls = generate_group(eng, prompt, demo, prefix_lens=[10, 25], num_samples=5, params=params, group_id=3, step=2)
    assert [r.slot for r in rolls] == [0, 1, 2, 3, 4]
    assert [r.kind.value for r in rolls] == ["on_policy"] * 3 + ["prefixed"] * 2
    assert [r.prefix_ids for r in rolls[3:]] == [demo[:10], demo[:25]]
    assert all(r.prefix_ids == [] and r.group_id == 3 and r.prompt_ids == prompt for r in rolls[:3])
    for r in rolls:
        assert len(r.response_ids) <= max(1, 12 - r.prefix_len)
        assert r.full_response_ids == r.prefix_ids + r.response_ids
        assert r.prefix_mask == [True] * r.prefix_len + [False] * len(r.response_ids)
        ref, _ = reference_logprobs(eng.model, prompt + r.prefix_ids, r.response_ids, 1.0)
        torch.testing.assert_close(torch.tensor(r.response_logprobs), ref, atol=TOL, rtol=0)
    # one engine call for several groups gives the same rollouts as one call per group (seeds per step/group/slot)
    g2 = GroupSpec(4, (9, 9, 9), tuple(range(200, 220)), 3, (5,))
    both = generate_groups(eng, [GroupSpec(3, tuple(prompt), tuple(demo), 5, (10, 25)), g2], params, step=2)
    assert [r.response_ids for r in both[0]] == [r.response_ids for r in rolls]
    assert [r.response_ids for r in both[1]] == [r.response_ids for r in generate_groups(eng, [g2], params, step=2)[0]]
    # another step draws other samples
    other = generate_group(eng, prompt, demo, [10, 25], 5, params, group_id=3, step=3)
    assert [r.response_ids for r in other] != [r.response_ids for r in rolls]


def test_group_spec_rejects_bad_prefix_lengths():
    with pytest.raises(ValueError, match="outside"):
        GroupSpec(0, (1, 2), (5, 6, 7), 4, (4,))
    with pytest.raises(ValueError, match="group size"):
        GroupSpec(0, (1, 2), (5, 6, 7), 1, (1, 2))


def _buckets(state_dict, per_bucket=5):
    items = list(state_dict.items())
    return [items[i : i + per_bucket] for i in range(0, len(items), per_bucket)]


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_weight_update_in_place_matches_a_model_loaded_with_those_weights(tiny_config, model_type):
    cfg = tiny_config(model_type)
    source = build_hf_model(cfg)  # the "trainer's" weights
    torch.manual_seed(123)
    eng = HFEngine(build_hf_model(cfg))
    reqs = [GenerateRequest([5, 6, 7, 8], SamplingParams(n=2, max_new_tokens=10, seed=4))]
    before = eng.generate(reqs)
    ptrs = {n: p.data_ptr() for n, p in eng.model.named_parameters()}
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    eng.update_weights(_buckets(sd), version=7)
    assert eng.weight_version == 7
    assert {n: p.data_ptr() for n, p in eng.model.named_parameters()} == ptrs  # in place
    for k, v in eng.model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    after = eng.generate(reqs)
    assert [c.token_ids for c in after[0]] != [c.token_ids for c in before[0]]
    torch.manual_seed(321)
    loaded = build_hf_model(cfg)
    loaded.load_state_dict(sd)
    ref = HFEngine(loaded).generate(reqs)
    for x, y in zip(after[0], ref[0]):
        assert x.token_ids == y.token_ids and x.logprobs == pytest.approx(y.logprobs, abs=TOL)


def test_weight_update_errors_name_the_tensor_and_leave_the_bucket_unapplied(tiny_config):
    eng = make_engine(tiny_config())
    w = eng.model.model.embed_tokens.weight
    orig = w.detach().clone()
    with pytest.raises(KeyError, match="model.layers.9.mlp.up_proj.weight"):
        eng.update_weights([[("model.embed_tokens.weight", torch.zeros_like(w)),
                             ("model.layers.9.mlp.up_proj.weight", torch.zeros(2, 2))]])  # fmt: skip
    assert torch.equal(w, orig)
    with pytest.raises(ValueError, match=r"lm_head.weight.*\(512, 32\).*\(512, 64\)"):
        eng.update_weights([[("lm_head.weight", torch.zeros(512, 32))]])


def test_config_from_directory_and_dict_errors(tiny_config, tmp_path):
    cfg = load_hf_config(tiny_config("qwen2"))
    cfg.save_pretrained(tmp_path)
    model = build_hf_model(tmp_path)
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.hidden_size == 64
    with pytest.raises(ValueError, match="model_type"):
        load_hf_config({"hidden_size": 64})
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_hf_config(tmp_path / "missing")
