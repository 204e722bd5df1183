"""Launching the trainer with NeMo-Run (LocalExecutor or SlurmExecutor, torchrun) and sizing it (memory estimate).

Import the submodules: `launch.config` (LaunchConfig), `launch.recipes` (executors, script, launch, dryrun),
`launch.memory` (per-GPU memory estimate), `launch.cli` (`python -m prefix_rft_megatron.launch`). NeMo-Run is
imported only by `recipes`, when a recipe is built.
"""
