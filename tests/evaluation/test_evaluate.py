"""`evaluate` end to end on a scripted engine whose answers are right or wrong by construction.

The engine decodes each request's prompt ids, checks they are exactly the training prompt template applied to a
benchmark problem, and answers "... \\boxed{X}" as token ids. Which samples are right is chosen per problem, so
the expected avg@k and pass@k are known exactly: all right must give 100%, all wrong 0%, a mix its exact value.
"""

import json

import pytest

from prefix_rft_megatron.data import DataConfig, load_tokenizer
from prefix_rft_megatron.data.tokenizer import PromptEncoder
from prefix_rft_megatron.evaluation import EvalConfig, evaluate, format_table, load_benchmark
from prefix_rft_megatron.reward import RewardConfig
from prefix_rft_megatron.rollout import Completion, RolloutEngine

BENCH = "bundled:math_chain/eval.jsonl"
WRONG = "12345"


class ScriptedEngine(RolloutEngine):
    def __init__(self, tokenizer, data_cfg, bench, n_correct):
        self.tok = tokenizer
        enc = PromptEncoder(data_cfg, tokenizer)
        self.by_prompt = {tuple(ids): (i, a) for i, (ids, a) in
                          enumerate(zip(enc.encode_prompts(list(bench.problems)), bench.answers))}
        self.n_correct = n_correct  # problem index -> how many of its samples answer correctly
        self.seen = []

    def generate(self, requests):
        out = []
        for req in requests:
            i, answer = self.by_prompt[req.input_ids]  # KeyError: not the training template's prompt
            self.seen.append((i, req.params))
            comps = []
            for j in range(req.params.n):
                text = f"So x is \\boxed{{{answer if j < self.n_correct(i) else WRONG}}}"
                ids = self.tok(text, add_special_tokens=False)["input_ids"] + [self.tok.eos_token_id]
                comps.append(Completion(ids, [0.0] * len(ids), "stop"))
            out.append(comps)
        return out

    def update_weights(self, buckets, version=None): ...
    def release_memory(self): ...
    def resume_memory(self): ...
    def health(self): return True
    def shutdown(self): ...


@pytest.fixture(scope="module")
def setup():
    tok = load_tokenizer()
    data_cfg = DataConfig()
    bench = load_benchmark(BENCH, max_problems=12)
    for a in bench.answers:  # the scripted answers survive a tokenize/decode round trip
        assert tok.decode(tok(f"\\boxed{{{a}}}", add_special_tokens=False)["input_ids"]) == f"\\boxed{{{a}}}"
    return tok, data_cfg, bench


def run(setup, n_correct, k=4, pass_k=(1, 2, 4)):
    tok, data_cfg, bench = setup
    engine = ScriptedEngine(tok, data_cfg, bench, n_correct)
    cfg = EvalConfig(k=k, pass_k=list(pass_k), max_new_tokens=64)
    res = evaluate(engine, tok, [bench], cfg, data_cfg, RewardConfig(num_workers=0))
    return res["benchmarks"][bench.name], engine, res


def test_all_correct_is_100_percent(setup):
    row, engine, res = run(setup, lambda i: 4)
    assert row["avg@4"] == 1.0 and row["pass@1"] == 1.0 and row["pass@4"] == 1.0
    assert row["correct_per_problem"] == [4] * 12
    # the sampling settings reached the engine, one request of n=k per problem, distinct seeds
    assert sorted(i for i, _ in engine.seen) == list(range(12))
    params = [p for _, p in engine.seen]
    assert all(p.n == 4 and p.temperature == 0.6 and p.top_p == 0.95 and p.max_new_tokens == 64 for p in params)
    assert len({p.seed for p in params}) == 12
    json.dumps(res)  # the results are JSON-serialisable
    assert "eval" in format_table(res)


def test_all_wrong_is_0_percent(setup):
    row, _, _ = run(setup, lambda i: 0)
    assert row["avg@4"] == 0.0 and row["pass@4"] == 0.0
    assert row["correct_per_problem"] == [0] * 12


def test_mixed_counts_give_exact_metrics(setup):
    counts = [i % 5 for i in range(12)]  # 0..4 correct of 4
    row, _, _ = run(setup, lambda i: counts[i])
    assert row["correct_per_problem"] == counts
    assert row["avg@4"] == pytest.approx(sum(c / 4 for c in counts) / 12)
    # pass@2 with n=4: 1 - C(4-c, 2)/C(4, 2)
    from math import comb
    assert row["pass@2"] == pytest.approx(sum(1 - comb(4 - c, 2) / comb(4, 2) for c in counts) / 12)
    assert row["pass@4"] == pytest.approx(sum(c > 0 for c in counts) / 12)


def test_bad_benchmark_row_names_file_and_row(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl row 2: missing field 'answer'"):
        load_benchmark(str(f))


def test_eval_config_rejects_pass_k_above_k():
    with pytest.raises(ValueError, match="eval.pass_k"):
        EvalConfig(k=4, pass_k=[1, 8])
