"""Configuration of the training loop, checkpoints and logging (sections `train`, `checkpoint`, `logging`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    steps: int = 500  # training steps (one rollout batch each); prefix-rft.md section 7
    prompts_per_step: int = 128  # B: prompts per step; each gets algorithm.group_size rollouts
    mini_batch_prompts: int = 64  # prompts per optimizer update: B / mini_batch_prompts updates per step
    micro_batch_size: int = 8  # sequences per forward-backward micro-batch (per DP rank) when not by token budget
    # > 0: micro-batches by token budget instead of by count: a mini-batch's sequences bin-packed by length so that
    # each micro-batch holds at most this many tokens (packed: real tokens; else rows x its longest row); a longer
    # sequence goes alone. Sets the activation memory of a micro-batch (launch/memory.py sizes it from this).
    max_tokens_per_micro_batch: int = 0
    # the sequences of a micro-batch laid end to end in one row (THD; attention stays within each sequence, RoPE
    # restarts) instead of rows padded to the longest. auto: on (both attention paths, TE and the local SDPA, take it)
    packing: str = "auto"
    lr: float = 1e-6  # constant after warm-up (paper: 1e-6)
    lr_warmup_steps: int = 0  # optimizer updates of linear warm-up
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    grad_clip: float = 1.0  # global grad-norm clip
    colocate: bool = True  # engines share the trainer's devices (memory released during training)
    eval_every: int = 50  # steps between evaluations on eval.benchmarks (0: only at the end)
    # The pass that recomputes log-probs (and entropies) before the updates. auto: skipped when the step makes one
    # update (mini_batch_prompts = prompts_per_step) and the algorithm needs no entropy or demonstration-token
    # statistics before it (rft): the update's own forward gives the same log-probs. always: every step.
    recompute: str = "auto"

    def __post_init__(self):
        if self.prompts_per_step % self.mini_batch_prompts:
            raise ValueError(
                f"train.mini_batch_prompts={self.mini_batch_prompts} must divide train.prompts_per_step="
                f"{self.prompts_per_step}")
        for name in ("steps", "prompts_per_step", "mini_batch_prompts", "micro_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1")
        if not self.lr > 0:  # also refuses nan
            raise ValueError(f"train.lr={self.lr}: must be > 0")
        if self.eval_every < 0:
            raise ValueError(f"train.eval_every={self.eval_every}: must be >= 0 (0: only at the end)")
        if self.max_tokens_per_micro_batch < 0:
            raise ValueError(f"train.max_tokens_per_micro_batch={self.max_tokens_per_micro_batch}: must be >= 0 "
                             "(0: micro-batches of train.micro_batch_size sequences)")
        self.packing = str(self.packing).lower()  # YAML's true / false arrive as booleans
        if self.packing not in ("auto", "true", "false"):
            raise ValueError(f"train.packing={self.packing!r}: not auto|true|false")
        if self.recompute not in ("auto", "always"):
            raise ValueError(f"train.recompute={self.recompute!r}: not auto|always")
        if self.lr_warmup_steps < 0:
            raise ValueError(f"train.lr_warmup_steps={self.lr_warmup_steps}: must be >= 0")

    @property
    def packed(self) -> bool:
        """Whether micro-batches are packed: `auto` is on (TE's fused attention and the local SDPA core both take
        packed THD sequences)."""
        return self.packing in ("auto", "true")


# distributed-optimizer state layouts (train/checkpoint.py)
OPTIMIZER_FORMATS = ("fully_reshardable", "dp_reshardable")


@dataclass
class CheckpointConfig:
    save_every: int = 50  # steps between checkpoints (model, optimizer, scheduler, data position, RNG)
    keep_last: int = 3  # older checkpoints are deleted once a newer one is complete (>= 1: the newest always stays)
    resume: bool = True  # start from the newest complete checkpoint in <output_dir>/checkpoints if there is one
    # start over in an output directory that holds a run (checkpoints or metrics) although resume=false, or whose
    # run cannot be resumed: its checkpoints, metrics and TensorBoard events are deleted. Off: such a start is refused
    overwrite: bool = False
    export_hf_at_end: bool = True  # write <output_dir>/hf (HF safetensors) when training ends
    # distributed-optimizer state: fully_reshardable resumes at any TP/PP/DP (a save gathers each DP group's state
    # in host memory); dp_reshardable saves without gathering but resumes only at the same TP/PP (train/checkpoint.py)
    optimizer_format: str = "fully_reshardable"

    def __post_init__(self):
        if self.save_every < 1:
            raise ValueError(f"checkpoint.save_every={self.save_every}: must be >= 1")
        if self.keep_last < 1:
            raise ValueError(f"checkpoint.keep_last={self.keep_last}: must be >= 1 (the newest checkpoint is what a "
                             "run resumes from)")
        if self.optimizer_format not in OPTIMIZER_FORMATS:
            raise ValueError(f"checkpoint.optimizer_format: {self.optimizer_format!r} is not "
                             "fully_reshardable|dp_reshardable")


@dataclass
class LoggingConfig:
    output_dir: str = "outputs/run"  # checkpoints, metrics.jsonl, TensorBoard events, exports
    tensorboard: bool = True
    wandb_project: str = ""  # set to log to Weights & Biases too (needs `pip install wandb`)
    progress: bool = True  # progress bar with step, reward and ETA
    log_level: str = "INFO"
