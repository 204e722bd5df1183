"""Final-answer extraction and the single-answer scoring function that the reward workers run.

The final answer of a response is the content of its *last* `\\boxed{...}` (or `\\fbox{...}`), braces matched.
Without one, math-verify searches the tail of the response (unless `boxed_only`).
"""

from __future__ import annotations

import functools
import logging
import re

from prefix_rft_megatron.reward.config import RewardConfig

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last balanced `\\boxed{...}` in `text`, stripped; None if there is none (or it never closes)."""
    starts = [m.end() for m in _BOX_OPEN.finditer(text)]
    # Only the last three candidates: thousands of unclosed boxes in a pathological response stay linear.
    for start in reversed(starts[-3:]):
        depth = 1
        for i in range(start, len(text)):
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
        # unclosed (a truncated response): try the box before it
    return None


MAX_GOLD_NESTING = 20  # brace depth; real answers stay far below, and sympy's parse time grows with it


def gold_answer_problem(answer: str, max_chars: int) -> str | None:
    """Why a ground-truth answer would make every rollout of its problem pay the reward's time limit (or never
    verify), or None. Cheap checks at load time: length, balanced braces, nesting depth, no box inside."""
    if len(answer) > max_chars:
        return f"answer is {len(answer)} characters, over reward.max_answer_chars={max_chars}"
    depth = deepest = 0
    for c in answer:
        depth += c == "{"
        depth -= c == "}"
        deepest = max(deepest, depth)
        if depth < 0:
            return "answer has an unbalanced '}'"
    if depth:
        return "answer has an unbalanced '{'"
    if deepest > MAX_GOLD_NESTING:
        return f"answer nests braces {deepest} levels deep (over {MAX_GOLD_NESTING})"
    if _BOX_OPEN.search(answer):
        return "answer contains \\boxed{} (give the bare answer)"
    return None


def _quiet_math_verify() -> None:
    # Timeouts are enforced by the pool (it kills the worker); math-verify's signal-based ones stay off and
    # its "timeout is disabled" warning is expected.
    for name in ("math_verify", "math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).setLevel(logging.ERROR)


_quiet_math_verify()


@functools.lru_cache(maxsize=4096)
def _parse_gold(answer: str):
    from math_verify import parse

    return parse("\\boxed{" + answer + "}", parsing_timeout=None)


def score_answer(response: str, answer: str, cfg: RewardConfig) -> tuple[bool, bool]:
    """(correct, formatted) for one response. No time limit here: the caller bounds it.

    `formatted` means the response has a non-empty final `\\boxed{}`.
    """
    from math_verify import parse, verify

    boxed = last_boxed(response)
    formatted = bool(boxed)
    if boxed is not None and len(boxed) > cfg.max_answer_chars:
        return False, formatted
    gold = _parse_gold(answer.strip())
    if not gold:
        raise ValueError(f"ground-truth answer {answer[:80]!r} does not parse")
    if boxed:
        pred = parse("\\boxed{" + boxed + "}", parsing_timeout=None)
    elif cfg.boxed_only or not cfg.fallback_tail_chars:
        return False, False
    else:
        pred = parse(response[-cfg.fallback_tail_chars :], parsing_timeout=None)
    if not pred:
        return False, formatted
    return bool(verify(gold, pred, timeout_seconds=None)), formatted
