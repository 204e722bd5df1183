"""HF -> Megatron (converter) -> live TP x PP model -> megatron's own dist_checkpointing.save -> HF (converter).

Usage: ckpt_roundtrip.py TP PP WORK_DIR HF_DIR [HF_DIR ...]
For each HF model: converts with the tools' converter for this TP, loads it into a model built at TP x PP, saves it
from the live model with megatron-core, converts that back to HF; rank 0 reports, per model, the tensor names of
both and those whose dtype or bits differ (tests/convert/test_roundtrip.py asserts there are none).
"""

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from prefix_rft_megatron.checkpoint_io.hf_io import HFCheckpointReader
from prefix_rft_megatron.convert.hf_to_megatron import convert_hf_to_megatron
from prefix_rft_megatron.convert.megatron_to_hf import convert_megatron_to_hf
from prefix_rft_megatron.model import ModelArch, build_gpt_model
from prefix_rft_megatron.model.load import load_model_weights, save_model_weights
from prefix_rft_megatron.parallel.init import destroy_parallel, initialize_parallel
from results import report


def main(tp, pp, work, *hf_dirs):
    tp, pp, work = int(tp), int(pp), Path(work)
    initialize_parallel(tp=tp, pp=pp)
    result = {}
    for hf_dir in map(Path, hf_dirs):
        tag = f"{hf_dir.name}_tp{tp}_pp{pp}"
        converted, saved, back = work / f"{tag}_conv", work / f"{tag}_saved", work / f"{tag}_hf"
        if dist.get_rank() == 0:
            convert_hf_to_megatron(hf_dir, converted, tp=tp, pp=pp, overwrite=True, progress=False)
        dist.barrier()
        arch = ModelArch.from_hf(hf_dir)
        model = build_gpt_model(arch)
        load_model_weights(model, converted)
        save_model_weights(model, saved, arch, hf_side_dir=hf_dir)
        if dist.get_rank() == 0:
            convert_megatron_to_hf(saved, back, overwrite=True, progress=False, max_shard_bytes=64 * 1024)
            src, out = HFCheckpointReader(hf_dir), HFCheckpointReader(back)
            common = sorted(set(src.weight_map) & set(out.weight_map))
            result[hf_dir.name] = {
                "source": sorted(src.weight_map), "back": sorted(out.weight_map),
                "differ": [n for n in common if not (src.get(n).dtype == out.get(n).dtype and
                                                    torch.equal(src.get(n), out.get(n)))]}
        dist.barrier()
        del model
    report(result)
    destroy_parallel()


if __name__ == "__main__":
    main(*sys.argv[1:])
