"""What the demo and the study compare: each arm is an algorithm (or an ablation of one) as `prefix-rft train`
overrides on top of conf/cpu_demo.yaml, with the learning-rate grid it is tuned over and the rate the study chose.

Every RL arm takes 8 rollouts per prompt, 16 prompts per step, 40 steps (Prefix-RFT: 7 on-policy + 1 prefixed, so
the rollout budget is equal; `rft_dynamic` draws more prompts when groups have no signal, counted in its metrics).
`sft_rft` spends the same 40 steps as SFT for the first half, then RFT from the SFT policy.
"""

from __future__ import annotations

from dataclasses import dataclass

# The study's learning-rate grids (--rl-grid, --sft-grid). SFT's reaches down to 1e-4: its best rate on the first
# three-point grid (3e-4 .. 3e-3) was the grid's edge.
GRIDS = {"rl": (1e-4, 3e-4, 1e-3), "sft": (1e-4, 3e-4, 1e-3, 3e-3)}


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]
    grid: str = "rl"  # which of GRIDS it is tuned over
    sft_first: bool = False  # sft_rft: the first half of the steps is SFT (at the SFT arm's chosen rate)
    ablation_of: str | None = None  # an ablation runs at its parent's chosen rate (not tuned itself)
    what: str = ""


PREFIX_RFT = ("algorithm.name=PREFIX_RFT", "algorithm.num_prefixed=1")
RFT = ("algorithm.name=RFT", "algorithm.num_prefixed=0")
SFT = ("algorithm.name=SFT", "train.micro_batch_size=8")  # 1 sequence per prompt: a mini-batch is 8 sequences

ARMS = {a.name: a for a in [
    Arm("prefix_rft", PREFIX_RFT, what="Prefix-RFT: top-20% entropy prefix tokens, cosine schedule"),
    Arm("rft", RFT, what="Dr. GRPO on-policy only"),
    Arm("rft_dynamic", RFT + ("algorithm.dynamic_sampling=true", "algorithm.dynamic_sampling_max_draws=3"),
        what="RFT with DAPO dynamic sampling (flat groups dropped, refilled from up to 3 prompt batches)"),
    Arm("luffy", ("algorithm.name=LUFFY", "algorithm.num_prefixed=1"),
        what="LUFFY: the full demonstration as one off-policy member of each group"),
    Arm("sft", SFT, grid="sft", what="cross-entropy on the demonstrations"),
    Arm("sft_rft", RFT, sft_first=True, what="SFT for 20 steps, then RFT from it for 20"),
    Arm("rho_1.0", PREFIX_RFT + ("algorithm.prefix_mask.rho=1.0",), ablation_of="prefix_rft",
        what="ablation: every prefix token trains"),
    Arm("random_20", PREFIX_RFT + ("algorithm.prefix_mask.selection=RANDOM",), ablation_of="prefix_rft",
        what="ablation: a random 20% of prefix tokens"),
    Arm("uniform", PREFIX_RFT + ("algorithm.schedule.kind=UNIFORM",), ablation_of="prefix_rft",
        what="ablation: prefix fraction ~ U(0.05, 0.95) at every step (no decay)"),
]}

DEMO_ARMS = ("prefix_rft", "rft", "sft")  # `make demo`
STUDY_ARMS = ("prefix_rft", "rft", "rft_dynamic", "luffy", "sft", "sft_rft")
ABLATIONS = ("rho_1.0", "random_20", "uniform")

# The rates `prefix-rft demo --study` chose on the validation split (arms.GRIDS, grid seed 1, AVX-512 path,
# 2026-12-03; examples/cpu_demo/README.md has the grid: neighbouring rates are often within a problem or two).
# `make demo` runs each arm at its rate; rerun the study to re-choose them on another machine.
CHOSEN_LR = {"prefix_rft": 3e-4, "rft": 1e-4, "rft_dynamic": 1e-4, "luffy": 3e-4, "sft": 1e-3, "sft_rft": 1e-4}


def lr_tag(lr: float) -> str:
    return f"{lr:.0e}".replace("e-0", "e-")
