"""Arguments for small but complete `prefix-rft train` runs used by the trainer tests."""


def train_args(policy, out, steps, **extra):
    """A small but complete Prefix-RFT run: 2 updates per step, checkpoint every step, no eval."""
    args = {
        "model.hf_path": str(policy), "logging.output_dir": str(out), "train.steps": str(steps),
        "train.prompts_per_step": "4", "train.mini_batch_prompts": "2", "train.micro_batch_size": "8",
        "train.lr": "1e-3", "rollout.max_new_tokens": "24", "algorithm.loss.max_response_tokens": "24",
        "eval.benchmarks": "[]", "checkpoint.save_every": "1", "logging.progress": "false",
        "checkpoint.export_hf_at_end": "false", "logging.tensorboard": "false",
    }
    args.update({k: str(v) for k, v in extra.items()})
    return [f"{k}={v}" for k, v in args.items()]
