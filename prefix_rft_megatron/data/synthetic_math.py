"""Generated arithmetic problems with short worked solutions: the bundled data of the CPU demo.

The task has to be one a tiny, briefly pretrained policy (hidden 64-256, a few layers, minutes on 2 CPU cores) gets
wrong most of the time on its own, yet can learn; and one where a worked demonstration carries information the policy
does not have (the intermediate results). Short multi-step arithmetic does that: every solution is a fixed sequence
of 2-4 small steps in one regular format, 20-60 tokens long with the bundled tokenizer (digits are single tokens),
and ends in `\\boxed{answer}`.

Distribution (`MIX`, weights of the problem kinds; every operand uniform over its range, drawn from
`random.Random(seed)`, so a (seed, n, kinds) triple always gives the same problems):

| kind      | problem                                   | operands (`digits` = 2)                       | answer |
| --------- | ----------------------------------------- | --------------------------------------------- | ------ |
| `add`     | What is a + b?                            | a, b in [10, 99]                              | a+b    |
| `sub`     | What is a - b?                            | b in [10, 98], a in [b+1, 99]                 | a-b    |
| `mul_add` | Compute a + b * c.                        | a in [10, 99], b, c in [2, 9]                 | a+b*c  |
| `paren`   | Compute (a + b) * c.                      | a, b in [1, 20], c in [2, 9]                  | (a+b)c |
| `linear`  | Solve for x: a x + b = c.                 | x in [-9, 12], a in [2, 9], b in [-20, 20]\\0 | x      |
| `word`    | NAME has a ITEMs and buys b bags of c ... | a in [10, 99], b, c in [2, 9]                 | a+b*c  |
| `sum2`    | Compute a + b.                            | a in [1, 18], b in [1, 9]                     | a+b    |
| `sum3`    | Compute a + b + c.                        | a, b, c in [1, 9]                             | a+b+c  |

`sum2`/`sum3` (not in `MIX`) are the CPU demo's task (`prefix_rft_megatron/demo/task.py`): `sum3` chains two `sum2` steps.

`digits` sets the ranges of `add`, `sub`, `mul_add`, `word` (`[10**(digits-1), 10**digits - 1]`): `digits=3` is the
out-of-distribution test set, `digits=1` an easier task for a smaller model or a shorter demo (`generate(n, seed,
digits=1)`; `paren` and `linear` do not change).
`linear_frac` (`a x = c` with a fractional solution, answer `\\frac{p}{q}`) is used only in an evaluation sample.

Solutions use single steps a small model can copy: column addition with an explicit carry, subtraction by tens then
ones, multiplication by tens then ones, both-sides moves for equations.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

MIX = {"add": 0.2, "sub": 0.15, "mul_add": 0.2, "paren": 0.15, "linear": 0.2, "word": 0.1}

NAMES = ["Sam", "Ana", "Tom", "Mia", "Leo", "Eva", "Ben", "Zoe"]
ITEMS = ["apples", "pens", "cards", "books", "coins", "shells"]


@dataclass(frozen=True)
class Problem:
    kind: str
    problem: str
    solution: str
    answer: str


def _lo_hi(digits: int) -> tuple[int, int]:
    return 10 ** (digits - 1), 10**digits - 1


def _add_steps(a: int, b: int) -> str:
    """Column addition of two non-negative numbers, ones first, with carries written out."""
    steps, carry, place = [], 0, 0
    x, y = a, b
    names = ["ones", "tens", "hundreds", "thousands"]
    while x or y or carry:
        dx, dy = x % 10, y % 10
        s = dx + dy + carry
        expr = f"{dx} + {dy}" + (f" + {carry}" if carry else "")
        if x // 10 == 0 and y // 10 == 0:  # leading column: write the whole sum
            steps.append(f"{names[place]}: {expr} = {s}.")
            break
        steps.append(f"{names[place]}: {expr} = {s}" + (", carry 1." if s >= 10 else "."))
        carry, x, y, place = s // 10, x // 10, y // 10, place + 1
    return " ".join(steps)


def _mul_steps(a: int, c: int) -> tuple[str, int]:
    """a * c for a >= 10 and one-digit c, as tens (and hundreds) times c plus ones times c."""
    tens, ones = a - a % 10, a % 10
    if ones == 0:
        return f"{a} * {c} = {a * c}.", a * c
    return f"{a} * {c} = {tens} * {c} + {ones} * {c} = {tens * c} + {ones * c} = {a * c}.", a * c


def sum_problem(*terms: int) -> Problem:
    """`Compute a + b (+ c ...).` solved left to right, one addition per sentence, each on the previous result:
    `a + b = s. s + c = r. \\boxed{r}`. Kind `sum<n>` for n terms."""
    steps, total = [], terms[0]
    for t in terms[1:]:
        steps.append(f"{total} + {t} = {total + t}.")
        total += t
    question = "Compute " + " + ".join(map(str, terms)) + "."
    return Problem(f"sum{len(terms)}", question, " ".join(steps) + f" \\boxed{{{total}}}", str(total))


def make_problem(kind: str, rng: random.Random, digits: int = 2) -> Problem:
    lo, hi = _lo_hi(digits)
    if kind == "add":
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        r = a + b
        return Problem(kind, f"What is {a} + {b}?", f"{_add_steps(a, b)} So {a} + {b} = {r}. \\boxed{{{r}}}", str(r))
    if kind == "sub":
        b = rng.randint(lo, hi - 1)
        a = rng.randint(b + 1, hi)
        tens, ones = b - b % 10, b % 10
        mid = a - tens
        if not tens:  # one-digit b
            sol = f"{a} - {b} = {a - b}."
        elif ones:
            sol = f"Take away {tens}: {a} - {tens} = {mid}. Take away {ones}: {mid} - {ones} = {a - b}."
        else:
            sol = f"Take away {tens}: {a} - {tens} = {mid}."
        return Problem(kind, f"What is {a} - {b}?", f"{sol} \\boxed{{{a - b}}}", str(a - b))
    if kind in ("mul_add", "word"):
        a, b, c = rng.randint(lo, hi), rng.randint(2, 9), rng.randint(2, 9)
        r = a + b * c
        if kind == "mul_add":
            q = f"Compute {a} + {b} * {c}."
            sol = f"First {b} * {c} = {b * c}. Then {a} + {b * c} = {r}. \\boxed{{{r}}}"
        else:
            name, item = rng.choice(NAMES), rng.choice(ITEMS)
            q = f"{name} has {a} {item} and buys {b} bags of {c} {item}. How many {item} does {name} have now?"
            sol = f"The bags hold {b} * {c} = {b * c} {item}. {a} + {b * c} = {r}. \\boxed{{{r}}}"
        return Problem(kind, q, sol, str(r))
    if kind == "paren":
        a, b, c = rng.randint(1, 20), rng.randint(1, 20), rng.randint(2, 9)
        s = a + b
        mul, r = _mul_steps(s, c) if s >= 10 else (f"{s} * {c} = {s * c}.", s * c)
        return Problem(kind, f"Compute ({a} + {b}) * {c}.", f"First {a} + {b} = {s}. Then {mul} \\boxed{{{r}}}", str(r))
    if kind == "linear":
        x, a = rng.randint(-9, 12), rng.randint(2, 9)
        b = rng.choice([v for v in range(-20, 21) if v])
        c = a * x + b
        lhs = f"{a}x + {b}" if b > 0 else f"{a}x - {-b}"
        move = f"Subtract {b} from both sides" if b > 0 else f"Add {-b} to both sides"
        sol = f"{move}: {a}x = {c - b}. Divide both sides by {a}: x = {x}. \\boxed{{{x}}}"
        return Problem(kind, f"Solve for x: {lhs} = {c}.", sol, str(x))
    if kind == "sum2":  # the CPU demo's one-step problems
        return sum_problem(rng.randint(1, 18), rng.randint(1, 9))
    if kind == "sum3":  # the CPU demo's two-step problems
        return sum_problem(rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 9))
    if kind == "linear_frac":
        a = rng.randint(2, 9)
        c = rng.choice([v for v in range(1, 40) if v % a])
        g = math.gcd(a, c)
        p, q = c // g, a // g
        return Problem(kind, f"Solve for x: {a}x = {c}.", f"Divide both sides by {a}: x = \\frac{{{p}}}{{{q}}}. "
                       f"\\boxed{{\\frac{{{p}}}{{{q}}}}}", f"\\frac{{{p}}}{{{q}}}")
    raise ValueError(f"unknown problem kind {kind!r}")


def generate(n: int, seed: int, mix: dict[str, float] | None = None, digits: int = 2,
             exclude: set[str] | None = None) -> list[Problem]:
    """`n` distinct problems (by problem text), none of whose text is in `exclude`. Deterministic in its arguments."""
    mix = mix or MIX
    kinds, weights = list(mix), list(mix.values())
    rng = random.Random(seed)
    seen = set(exclude or ())
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > 50 * n + 1000:
            raise ValueError(f"cannot draw {n} distinct problems from mix {mix} with digits={digits}")
        p = make_problem(rng.choices(kinds, weights)[0], rng, digits)
        if p.problem in seen:
            continue
        seen.add(p.problem)
        out.append(p)
    return out
