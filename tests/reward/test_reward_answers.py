"""math-verify scoring of real answer pairs, in-process (the function every pool worker runs)."""

import time

import pytest

from prefix_rft_megatron.reward import RewardConfig, last_boxed, score_one

CFG = RewardConfig(num_workers=0)

EQUIVALENT = [  # (response, gold answer)
    (r"So $x = \boxed{0.5}$.", r"\frac{1}{2}"),  # decimal vs fraction
    (r"\boxed{\frac{3}{4}}", "3/4"),  # \frac vs slash
    (r"\boxed{\dfrac{3}{4}}", "0.75"),
    (r"\boxed{\frac12}", "1/2"),
    (r"\boxed{-\frac{7}{2}}", "-3.5"),
    (r"\boxed{(1,3]}", "(1,3]"),  # interval
    (r"\boxed{[-2, \infty)}", r"[-2,\infty)"),
    (r"\boxed{\{3, 1, 2\}}", r"\{1,2,3\}"),  # set, any order
    (r"\boxed{5\text{ cm}}", "5"),  # units
    (r"\boxed{12\,\mathrm{m}}", "12"),
    (r"\boxed{\text{5}}", "5"),  # \text{}
    (r"\boxed{10\%}", "0.1"),  # percent
    (r"\boxed{x=3}", "3"),  # equation vs value
    (r"\boxed{2\sqrt{2}}", r"\sqrt{8}"),
    (r"The sum is 1 + 2 = 3, so \boxed{4} was wrong; the final answer is \boxed{3}.", "3"),  # last box wins
    (r"\boxed{{42}}", "42"),  # nested braces
]

WRONG = [
    (r"\boxed{4}", "3"),
    (r"\boxed{\frac{1}{3}}", "0.3"),
    (r"\boxed{(1,3)}", "[1,3]"),  # open vs closed interval
    (r"\boxed{\{1,2\}}", r"\{1,2,3\}"),
    (r"\boxed{-5}", "5"),
    (r"\boxed{3} ... actually \boxed{5}", "3"),  # only the final answer counts
]


@pytest.mark.parametrize("response,gold", EQUIVALENT)
def test_equivalent_forms_score_one(response, gold):
    r = score_one(response, gold, CFG)
    assert (r.correct, r.formatted, r.reward, r.error) == (True, True, 1.0, None)


@pytest.mark.parametrize("response,gold", WRONG)
def test_wrong_answers_score_zero(response, gold):
    r = score_one(response, gold, CFG)
    assert (r.correct, r.formatted, r.reward) == (False, True, 0.0)


def test_missing_box_falls_back_to_the_response_tail():
    r = score_one("2 + 10 = 12. The answer is $12$.", "12", CFG)
    assert (r.correct, r.formatted, r.reward) == (True, False, 1.0)
    strict = RewardConfig(num_workers=0, boxed_only=True)
    assert score_one("2 + 10 = 12. The answer is $12$.", "12", strict).reward == 0.0
    assert score_one("I do not know.", "12", CFG).reward == 0.0


def test_empty_and_unclosed_box():
    assert score_one("", "7", CFG) == score_one("", "7", CFG)
    r = score_one("", "7", CFG)
    assert (r.correct, r.formatted, r.reward) == (False, False, 0.0)
    r = score_one(r"so \boxed{}", "7", CFG)
    assert (r.correct, r.formatted) == (False, False)
    # a response truncated inside its box: the earlier complete box is the final answer
    assert last_boxed(r"\boxed{7} then \boxed{8") == "7"
    assert score_one(r"\boxed{7} then \boxed{8", "7", CFG).correct


def test_huge_responses_are_cheap():
    filler = "We add the numbers carefully. " * 40_000  # ~1.2 MB
    t0 = time.monotonic()
    assert score_one(filler + r"\boxed{17}", "17", CFG).correct
    assert score_one(filler, "17", CFG).reward == 0.0
    assert score_one(r"\boxed{" * 50_000, "17", CFG).reward == 0.0  # thousands of unclosed boxes
    assert not score_one(r"\boxed{" + "1+" * 5000 + "1}", "17", CFG).correct  # over max_answer_chars
    assert time.monotonic() - t0 < 10.0


def test_format_score():
    cfg = RewardConfig(num_workers=0, format_score=0.1)
    assert score_one(r"\boxed{3}", "3", cfg).reward == pytest.approx(1.1)
    assert score_one(r"\boxed{4}", "3", cfg).reward == pytest.approx(0.1)
    assert score_one("3", "3", cfg).reward == pytest.approx(1.0)  # right, but unformatted
    assert score_one("no idea", "3", cfg).reward == 0.0


def test_unparsable_gold_is_an_error_not_a_crash():
    r = score_one(r"\boxed{3}", "", CFG)
    assert r.reward == 0.0 and r.error is not None


def test_last_boxed():
    assert last_boxed(r"a \boxed{\frac{1}{2}} b") == r"\frac{1}{2}"
    assert last_boxed(r"\fbox{3}") == "3"
    assert last_boxed("no box") is None
    assert last_boxed(r"\boxed{1} and \boxed{ 2 }") == "2"


def test_config_validation():
    with pytest.raises(ValueError, match="timeout_s"):
        RewardConfig(timeout_s=0)
    with pytest.raises(ValueError, match="start_method"):
        RewardConfig(start_method="thread")
