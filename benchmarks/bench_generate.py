"""Rollout generation throughput: sampled tokens per second of a rollout engine.

    python benchmarks/bench_generate.py                                   # HF engine, small random Llama, CPU
    python benchmarks/bench_generate.py --hidden 256 --layers 4 --batch 32
    python benchmarks/bench_generate.py --engine sglang --url http://127.0.0.1:30000   # a running SGLang server

Every sample runs to --new-tokens (EOS ignored), so the token count is exact.
"""

import argparse
import time

import torch

from prefix_rft_megatron.rollout import GenerateRequest, RolloutConfig, SamplingParams


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", choices=["hf", "sglang"], default="hf")
    ap.add_argument("--url", action="append", default=[], help="SGLang server URL (repeatable)")
    ap.add_argument("--model-type", default="llama", choices=["llama", "qwen2"])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--prompts", type=int, default=4, help="distinct prompts")
    ap.add_argument("--n", type=int, default=4, help="samples per prompt")
    ap.add_argument("--batch", type=int, default=16, help="HF engine rows per forward")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    if args.engine == "hf":
        from prefix_rft_megatron.rollout.hf_engine import HFEngine

        torch.manual_seed(0)
        heads = max(1, args.hidden // 32)
        config = dict(model_type=args.model_type, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                      vocab_size=args.vocab, max_position_embeddings=args.prompt_len + args.new_tokens + 8,
                      eos_token_id=2)  # fmt: skip
        engine = HFEngine.from_config(config, max_batch_size=args.batch)
        n_params = sum(p.numel() for p in engine.model.parameters())
        desc = f"HF {args.model_type} {n_params / 1e6:.1f}M params, torch threads {torch.get_num_threads()}"
        vocab = args.vocab
    else:
        from prefix_rft_megatron.rollout.sglang import SGLangEngine

        if not args.url:
            ap.error("--engine sglang needs --url")
        engine = SGLangEngine(RolloutConfig(engine="sglang", server_urls=args.url))
        desc, vocab = f"SGLang {args.url}", 1000

    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(3, vocab, (args.prompt_len,), generator=g).tolist() for _ in range(args.prompts)]
    params = SamplingParams(n=args.n, temperature=1.0, max_new_tokens=args.new_tokens, seed=0, ignore_eos=True)
    requests = [GenerateRequest(p, params) for p in prompts]
    engine.generate(requests[:1])  # warm-up
    for r in range(args.repeats):
        t0 = time.perf_counter()
        out = engine.generate(requests)
        dt = time.perf_counter() - t0
        tokens = sum(len(c.token_ids) for comps in out for c in comps)
        print(f"{desc}: {args.prompts}x{args.n} samples, {tokens} tokens in {dt:.2f}s = {tokens / dt:.0f} tokens/s")
    engine.shutdown()


if __name__ == "__main__":
    main()
