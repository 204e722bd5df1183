"""`prefix-rft demo-parity` (~30 s): the conversion and parity path on its own, no training.

1. make a tiny Qwen2-architecture policy with the bundled tokenizer (HF layout, random init);
2. convert it to a Megatron distributed checkpoint (tools/convert_hf_to_megatron.py);
3. load it into Megatron-Core GPTModels at TP=1 and TP=2 (2 processes, gloo) and compare logits with
   transformers on the same tokens (tools/compare_logits.py);
4. convert it back to HF (tools/convert_megatron_to_hf.py) and check every tensor is bit-identical.
The training demo is `prefix-rft demo` (prefix_rft_megatron/demo/).
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from prefix_rft_megatron.data.config import resolve_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="prefix-rft demo-parity", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="outputs/demo_parity", help="working directory")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer

    from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader
    from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
    from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf
    from prefix_rft_megatron.convert.compare import main as compare_logits
    from prefix_rft_megatron.model.tiny import save_tiny_hf_model

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(resolve_path("bundled:tokenizer"))
    base = out / "base_hf"
    shutil.rmtree(base, ignore_errors=True)
    save_tiny_hf_model(base, family="qwen2", tie_word_embeddings=True, vocab_size=len(tok), hidden_size=128,
                       intermediate_size=384, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=1024, max_shard_size="1MB")
    tok.save_pretrained(base)
    print(f"[1/4] tiny Qwen2 policy ({len(tok)}-token bundled tokenizer) -> {base}")
    meg = convert_hf_to_megatron(base, out / "megatron", tp=2, overwrite=True, progress=False)
    print(f"[2/4] HF -> Megatron distributed checkpoint -> {meg}")
    rcs = [compare_logits(["--hf-dir", str(base), "--megatron-ckpt", str(meg), "--tp", str(tp)]) for tp in (1, 2)]
    print(f"[3/4] logits vs transformers at TP=1 and TP=2: {'OK' if not any(rcs) else 'FAIL'}")
    back = convert_megatron_to_hf(meg, out / "hf_export", overwrite=True, progress=False)
    a, b = HFCheckpointReader(base), HFCheckpointReader(back)
    same = all(torch.equal(a.get(n), b.get(n)) for n in a.weight_map) and set(a.weight_map) == set(b.weight_map)
    print(f"[4/4] Megatron -> HF -> {back}: {len(a.weight_map)} tensors {'bit-identical' if same else 'DIFFER'}")
    print(f"demo finished in {time.time() - t0:.0f}s")
    return 0 if same and not any(rcs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
