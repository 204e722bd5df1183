"""The whole configuration as typed dataclasses (OmegaConf structured configs).

Every knob has a type, a default and a comment. `conf/base.yaml` is generated from these defaults
(`prefix-rft show-config --defaults`); other YAML files and command-line `a.b=c` overrides only change values.
Each stage owns its section's dataclass (algo, data, reward, rollout); this module assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from prefix_rft_megatron.algo.config import AlgorithmConfig
from prefix_rft_megatron.data.config import DataConfig
from prefix_rft_megatron.evaluation.config import EvalConfig
from prefix_rft_megatron.parallel.backends import DEFAULT_TIMEOUT_MINUTES
from prefix_rft_megatron.reward.config import RewardConfig
from prefix_rft_megatron.rollout.config import RolloutConfig
from prefix_rft_megatron.train.config import CheckpointConfig, LoggingConfig, TrainConfig


@dataclass
class ModelConfig:
    hf_path: str = ""  # HF model directory (config.json, tokenizer, safetensors): the policy's starting point
    megatron_ckpt: str = ""  # Megatron distributed checkpoint to start from; converted from hf_path when empty
    params_dtype: str = "float32"  # float32 | bfloat16 (GPU) ; master weights and optimizer stay fp32
    transformer_impl: str = "auto"  # auto (TE when importable with CUDA) | transformer_engine | local
    make_vocab_size_divisible_by: int = 128  # vocab is padded to a multiple of this times TP (Megatron's rule)
    recompute_activations: bool = False  # full activation recomputation per layer (saves memory on long responses)

    def __post_init__(self):
        if self.params_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"model.params_dtype: {self.params_dtype!r} is not float32 or bfloat16")
        if self.transformer_impl not in ("auto", "transformer_engine", "local"):
            raise ValueError(f"model.transformer_impl: {self.transformer_impl!r} is not auto|transformer_engine|local")


@dataclass
class ParallelConfig:
    tp: int = 1  # tensor-parallel size
    pp: int = 1  # pipeline-parallel size
    # data-parallel size is world_size / (tp * pp)
    use_distributed_optimizer: bool = True  # Megatron's distributed optimizer (optimizer state sharded over DP)
    # Megatron's sequence parallelism, used when tp > 1: the activations outside attention and MLP (norms, residuals,
    # dropout) are split along the sequence over the TP ranks instead of held whole on each; what the memory
    # estimate (`prefix-rft launch --check`) assumes. Sequences are padded to a multiple of tp for it.
    sequence_parallel: bool = True
    # torch's global RNG on every rank (the same on all) and Megatron's RNG tracker (dropout, if a model has any).
    # Not the weights (they come from model.hf_path / megatron_ckpt); see the top-level `seed`.
    seed: int = 1234
    # How long a rank waits in a collective before the job aborts. The longest wait is by design: the other ranks
    # wait while rank 0 alone generates the step's rollouts (every dynamic-sampling draw included) or evaluates
    # (eval.samples_per_problem completions of every benchmark problem). 120 minutes covers the shipped recipes'
    # 16k-token rollouts with 4 draws; raise it for longer ones.
    timeout_minutes: float = DEFAULT_TIMEOUT_MINUTES

    def __post_init__(self):
        if not self.timeout_minutes > 0:
            raise ValueError(f"parallel.timeout_minutes: {self.timeout_minutes!r} must be > 0")


@dataclass
class ClusterConfig:
    """The job's size, as `prefix-rft launch` reads it when --nodes / --gpus-per-node are not given (the trainer
    itself takes its world size from torchrun)."""

    nodes: int = 1
    gpus_per_node: int = 8

    def __post_init__(self):
        if self.nodes < 1 or self.gpus_per_node < 1:
            raise ValueError(f"cluster: nodes and gpus_per_node must be >= 1 (got {self.nodes}, {self.gpus_per_node})")


# The sections that draw random numbers, each from its own seed (`<section>.seed`).
SEEDED_SECTIONS = ("parallel", "algorithm", "rollout", "data", "eval")


@dataclass
class Config:
    # One seed for the whole run: when set, every `<section>.seed` not given explicitly takes this value (each
    # stream hashes it with its own labels, so equal values do not correlate them). Unset: the sections' defaults.
    seed: Optional[int] = None
    model: ModelConfig = field(default_factory=ModelConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    data: DataConfig = field(default_factory=DataConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
