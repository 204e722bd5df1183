"""Train the small byte-level BPE tokenizer that ships with the repository (no hub download at run time).

    python tools/build_tokenizer.py [--data DIR] [--out prefix_rft_megatron/assets/tokenizer] [--vocab-size 1024]

Trained on generated math text (problems, solutions, the prompt template): `tools/make_math_dataset.py`'s output, in
DIR or, by default, written to a temporary directory first. Byte-level, so any UTF-8 text
encodes and decodes back exactly (LaTeX from other datasets included, just in more tokens). Numbers are split into
single digits, a leading space kept with the first one (` 47` -> ` 4`, `7`), as Llama/Qwen tokenizers do: a small model
then learns digit arithmetic instead of memorising number tokens. Special tokens, in id order from 0:
`<pad>`, `<s>` (bos, prepended by the post-processor), `</s>` (eos), `<|im_start|>`, `<|im_end|>` (ChatML markers of
the chat template). Writes `tokenizer.json` + `tokenizer_config.json` for `AutoTokenizer.from_pretrained(dir)`.
Deterministic for the same input files.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from prefix_rft_megatron.data.config import DEFAULT_PROMPT_TEMPLATE  # noqa: E402

ASSETS = Path(__file__).resolve().parent.parent / "prefix_rft_megatron" / "assets"
SPECIAL = ["<pad>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Common words of math text beyond the generated problems, so that other math data (and the model's mistakes) do not
# fall apart into single bytes. Each is seen a few times so that BPE merges it.
EXTRA = (
    "the of and to is in that for we so then let this be are with as by it from have which at an or on if not "
    "number numbers answer solution problem find solve value values equation equations sum product difference "
    "quotient total each both sides divide multiply add subtract equal equals therefore thus hence since because "
    "integer integers real positive negative prime factor factors remainder digit digits fraction fractions "
    "square root roots triangle circle area perimeter angle angles length side sides point points line lines "
    "probability function functions polynomial degree minimum maximum first second third step steps check "
    "\\frac \\dfrac \\sqrt \\cdot \\times \\div \\pm \\le \\ge \\neq \\pi \\infty \\text \\left \\right "
    "\\{ \\} \\( \\) \\[ \\] ^{2} ^{3} _{n} x^2 f(x) a_n $x$ $$ = + - * / ( ) [ ] < > % . , : ;"
)


def corpus(data_dir: Path) -> list[str]:
    texts = ["system\nuser\nassistant\n"] * 4 + [EXTRA] * 4
    for name in ("train.jsonl", "eval.jsonl", "pretrain.jsonl"):
        with open(data_dir / name, encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                texts += [DEFAULT_PROMPT_TEMPLATE.replace("{problem}", row["problem"]), row["solution"]]
    return texts


def build(texts: list[str], vocab_size: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),  # one digit per pre-token (space attached)
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", bos)])
    return tok


def save(tok: Tokenizer, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    config = {  # hand-written so that transformers 4.x and 5.x read it alike
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 4096,
        "padding_side": "right",
        "chat_template": CHAT_TEMPLATE,
    }
    with open(out / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(out / "special_tokens_map.json", "w", encoding="utf-8") as f:
        json.dump({k: config[k] for k in ("bos_token", "eos_token", "pad_token", "additional_special_tokens")}, f,
                  indent=2)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="make_math_dataset.py's output (default: generate it)")
    ap.add_argument("--out", type=Path, default=ASSETS / "tokenizer")
    ap.add_argument("--vocab-size", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            import make_math_dataset

            data = Path(tmp) / "math"
            make_math_dataset.main(["--out", str(data)])
        tok = build(corpus(data), args.vocab_size)
    save(tok, args.out)
    print(f"{args.out}: vocab {tok.get_vocab_size()}, special "
          f"{ {t: tok.token_to_id(t) for t in SPECIAL} }")


if __name__ == "__main__":
    main()
