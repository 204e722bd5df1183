"""prefix_rft_megatron: Prefix-RFT on Megatron-Core.

torch is deliberately not pinned here beyond a floor: a user's CUDA build is left alone. On a machine with no torch,
`make setup` installs the CPU build (torch==2.13.0) before this package, so pip never pulls a CUDA wheel by itself.
"""

from setuptools import find_packages, setup

setup(
    name="prefix_rft_megatron",
    version="0.1.0",
    description="Prefix-RFT (arXiv 2507.01679) on Megatron-Core with SGLang rollouts",
    packages=find_packages(include=["prefix_rft_megatron", "prefix_rft_megatron.*"]),
    package_data={"prefix_rft_megatron": ["assets/**/*"]},
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=[
        "torch>=2.4",
        # compat/ and the CPU shims are written against megatron-core 0.16 (and checked at import)
        "megatron-core>=0.16.1,<0.17",
        "omegaconf>=2.3",
        "transformers>=4.50,<5.40",  # the HF engine passes past_key_values, which 5.40 removes (deprecated in 5.24)
        "safetensors>=0.4",
        "math-verify>=0.7",
        "nemo-run>=0.11.1,<0.12",  # launch.recipes reads the dry run through NeMo-Run 0.11's objects
        # nemo-run 0.11.1 resolves leptonai 0.47.x, with which `import nemo_run` fails (measured, see architecture.md).
        "leptonai==0.27.3",
        "psutil",  # megatron's dist_checkpointing needs it but does not declare it (a save hangs without it)
        "tqdm",
        "rich",
        "tensorboard",
        "pyarrow",
        "matplotlib",
    ],
    extras_require={
        # The trainer's GPU environment: Transformer Engine within megatron-core 0.16.1's own range (its dev extra pins
        # >=2.9,<2.12). Install with --no-build-isolation: transformer_engine_torch compiles against the torch already
        # in the environment, not one pip's build isolation fetches. sglang is NOT here: sglang 0.5.23 pins its own
        # torch (2.14.1) and CUDA stack, so the servers get an environment of their own (README, "GPU"); the trainer
        # only speaks its HTTP API (rollout/sglang/payloads.SGLANG_API_VERSION) and needs no sglang import.
        "gpu": ["transformer-engine[pytorch]>=2.9,<2.12"],
        "wandb": ["wandb"],
        # trl: the smoke test of benchmarks/bench_vs_trl.py runs both trainers (tests/benchmarks)
        "test": ["pytest>=8", "trl==1.16.0"],
        # benchmarks/bench_vs_trl.py: Hugging Face TRL's GRPOTrainer, the trainer it compares a step against
        "bench": ["trl==1.16.0"],
    },
    entry_points={"console_scripts": ["prefix-rft=prefix_rft_megatron.cli:main"]},
)
