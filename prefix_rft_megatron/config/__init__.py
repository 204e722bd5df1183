from prefix_rft_megatron.config.loader import ConfigError, load_config, to_yaml
from prefix_rft_megatron.config.schema import Config, ModelConfig, ParallelConfig

__all__ = ["Config", "ConfigError", "ModelConfig", "ParallelConfig", "load_config", "to_yaml"]
