"""Resharding and bucketed transfer of the trainer's weights to the rollout engines (see `weight_sync`)."""

from prefix_rft_megatron.sync.weight_sync import SyncStats, WeightSync, bucketize

__all__ = ["SyncStats", "WeightSync", "bucketize"]
