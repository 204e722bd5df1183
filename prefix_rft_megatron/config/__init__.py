from prefix_rft_megatron.config.loader import load_config, to_yaml
from prefix_rft_megatron.config.schema import Config, ModelConfig, ParallelConfig
from prefix_rft_megatron.config.validate import ConfigError, check_training

__all__ = ["Config", "ConfigError", "ModelConfig", "ParallelConfig", "check_training", "load_config", "to_yaml"]
