"""Data configuration (OmegaConf structured config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

ASSETS_DIR = Path(__file__).resolve().parent.parent / "assets"
BUNDLED = "bundled:"  # path prefix for files shipped in prefix_rft_megatron/assets/, e.g. "bundled:math_chain/train.jsonl"

# prefix-rft.md section 7 (the reference's prompt). `{problem}` is replaced literally (no str.format: LaTeX braces).
DEFAULT_PROMPT_TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{}"


def resolve_path(path: str) -> Path:
    """`bundled:x` -> prefix_rft_megatron/assets/x; anything else is a local path."""
    return ASSETS_DIR / path[len(BUNDLED):] if path.startswith(BUNDLED) else Path(path)


@dataclass
class DataConfig:
    """Where the prompts, demonstrations and answers come from and how they become token ids.

    Field names are dotted paths into a row (`reward_model.ground_truth`). A list value picks one element (see
    `demo_index`, `demo_correct_field`); a chat-message list gives the last user message's (problem) or the
    message's (demonstration) `content`. Defaults read the OpenR1-Math layout (`problem`, `solution`, `answer`);
    LUFFY's parquet is `problem_field=prompt, demo_field=target, answer_field=reward_model.ground_truth`.
    """

    train_files: list[str] = field(default_factory=lambda: [BUNDLED + "math_chain/train.jsonl"])
    """Training files, `.jsonl`/`.json` (one JSON object a line) or `.parquet`, read in order."""

    eval_files: list[str] = field(default_factory=list)
    """Deprecated, empty: use `eval.benchmarks` (what the trainer and `prefix-rft eval` evaluate on). A non-empty
    value stands for `eval.benchmarks` when that is not set, with a warning (`config.loader`)."""

    tokenizer: str = BUNDLED + "tokenizer"
    """Local tokenizer directory for `AutoTokenizer.from_pretrained` (never downloaded: `local_files_only`)."""

    problem_field: str = "problem"
    """Field holding the problem text (or a chat-message list: the last user message is the problem)."""

    demo_field: str = "solution"
    """Field holding the demonstration (worked solution); a list of them, or chat messages, also work."""

    demo_index: int = 0
    """Which demonstration when `demo_field` is a list and `demo_correct_field` is unset."""

    demo_correct_field: Optional[str] = None
    """List of booleans aligned with a list-valued `demo_field`; the first True one is used (OpenR1-Math:
    `correctness_math_verify`). A row with none True is bad."""

    answer_field: str = "answer"
    """Field holding the ground-truth final answer (a one-element list, as in verl files, also works)."""

    id_field: str = "id"
    """Field holding an example id; rows without one get `<file name>:<row>`."""

    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    """Text of the user turn; `{problem}` is replaced by the problem."""

    use_chat_template: bool = False
    """Wrap the prompt in the tokenizer's chat template (user turn + generation prompt) instead of using it raw."""

    system_prompt: Optional[str] = None
    """System message put before the user turn when `use_chat_template` (None: no system message)."""

    eos_token: Optional[str] = None
    """Token appended to every demonstration; None uses the tokenizer's eos token (chat models: e.g. `<|im_end|>`)."""

    max_prompt_tokens: int = 1024
    """Rows whose prompt (template applied) is longer are bad rows (skipped, or fatal when strict)."""

    max_demo_tokens: int = 0
    """Rows whose demonstration (eos included) is longer are bad rows (skipped, or fatal when strict). 0 (default):
    rollout.max_new_tokens, the response budget (a longer demonstration would make prefixed, SFT and LUFFY responses
    longer than any rollout); an explicit value must not exceed it."""

    strict: bool = False
    """Stop at the first bad row (missing field, empty demonstration, bad JSON, non-UTF-8, too long) with its file and
    row; otherwise skip bad rows and log how many of each kind."""

    seed: int = 1
    """Seed of the prompt sampler's per-epoch shuffle."""

    shuffle: bool = True
    """Shuffle the prompts every epoch (a permutation drawn from (seed, epoch)); False keeps file order."""

    def __post_init__(self) -> None:
        if "{problem}" not in self.prompt_template:
            raise ValueError("data.prompt_template must contain '{problem}'")
        if self.max_prompt_tokens <= 0 or self.max_demo_tokens == 1 or self.max_demo_tokens < 0:
            raise ValueError("data.max_prompt_tokens must be > 0 and data.max_demo_tokens > 1 (or 0: derived)")
        if self.demo_index < 0:
            raise ValueError(f"data.demo_index must be >= 0, got {self.demo_index}")
        for name in ("problem_field", "demo_field", "answer_field", "id_field"):
            if not getattr(self, name):
                raise ValueError(f"data.{name} must not be empty")
