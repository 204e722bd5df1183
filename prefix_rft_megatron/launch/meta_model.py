"""Build one rank's share of the model per pipeline stage on the meta device, in this process, with no GPU.

torch's "fake" process-group backend stands in for the job's world (no communication ever happens), so Megatron's
parallel state answers for rank (stage, TP rank 0, DP rank 0) of a TP x PP layout and `build_gpt_model` builds
exactly the modules that rank would, with parameters that take no memory. Used by the pre-flight check to count
parameters per stage; run it in a process of its own (`python -m prefix_rft_megatron.launch.meta_model`), since it
owns torch.distributed's default group while it runs.

    python -m prefix_rft_megatron.launch.meta_model ARCH.json TP PP   ->  JSON {"stage_params": [...]}
"""

from __future__ import annotations

import json
import sys


def stage_param_counts(arch_dict: dict, tp: int, pp: int, make_vocab_size_divisible_by: int = 128) -> list[int]:
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from prefix_rft_megatron.model.arch import ModelArch
    from prefix_rft_megatron.model.builder import build_gpt_model

    from prefix_rft_megatron.compat import cpu

    cpu.install()  # model set-up calls .cuda() (tied embeddings over PP); a no-op where CUDA exists
    arch = ModelArch.from_dict(arch_dict)
    counts = []
    for stage in range(pp):
        # Megatron's default rank order (tp-cp-ep-dp-pp): TP rank 0 of DP rank 0 of this stage
        dist.init_process_group("fake", rank=stage * tp, world_size=tp * pp, store=FakeStore())
        parallel_state.initialize_model_parallel(tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
                                                 create_gloo_process_groups=False)
        with torch.device("meta"):
            model = build_gpt_model(arch, params_dtype=torch.bfloat16,
                                    make_vocab_size_divisible_by=make_vocab_size_divisible_by,
                                    perform_initialization=False, use_cpu_initialization=True)
        counts.append(sum(p.numel() for p in model.parameters()))
        del model
        parallel_state.destroy_model_parallel()
        dist.destroy_process_group()
    return counts


def main(argv=None) -> int:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    arch_path, tp, pp, *rest = sys.argv[1:] if argv is None else argv
    with open(arch_path) as f:
        arch = json.load(f)
    divisible = int(rest[0]) if rest else 128
    print(json.dumps({"stage_params": stage_param_counts(arch, int(tp), int(pp), divisible)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
