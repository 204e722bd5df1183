"""Load model weights from a Megatron distributed checkpoint into a live (TP/PP-sharded) GPTModel."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from megatron.core import dist_checkpointing, parallel_state
from megatron.core.dist_checkpointing.mapping import ShardedObject

from prefix_rft_megatron.checkpoint_io.dist_ckpt import CheckpointReader

logger = logging.getLogger(__name__)


class CheckpointLayoutError(ValueError):
    """The checkpoint cannot be loaded into this model layout (one line)."""


def check_vocab_padding(model, ckpt: CheckpointReader, vocab_size: int | None = None) -> None:
    """The vocabulary is padded to a multiple of make_vocab_size_divisible_by x TP, so a checkpoint written (or
    converted) at another TP can hold another number of embedding rows, which megatron's load cannot reshape. Stop
    with one line that says what to do; `vocab_size` (unpadded) lets it name a make_vocab_size_divisible_by that fits.
    """
    key = "embedding.word_embeddings.weight"
    if key not in ckpt.metadata.state_dict_metadata or not hasattr(model, "vocab_size"):
        return
    saved, wanted = ckpt.shape(key)[0], model.vocab_size
    if saved == wanted:
        return
    tp = parallel_state.get_tensor_model_parallel_world_size()
    # a multiple m of TP that divides `saved` and exceeds its padding pads the vocabulary to exactly `saved` rows
    fits = [m for m in range(tp, saved + 1, tp)
            if vocab_size is not None and saved % m == 0 and saved - vocab_size < m]
    setting = (f"set model.make_vocab_size_divisible_by={fits[0] // tp}" if fits else
               "set model.make_vocab_size_divisible_by so that both pad alike")
    meta = ckpt.dir / "prefix_rft.json"  # written by the converter (and save_model_weights), not by training saves
    made_for, fix = "", setting
    if meta.is_file():
        made_for = f" (converted for tp={json.loads(meta.read_text()).get('tp')})"
        fix = f"re-convert with --tp {tp} or {setting}"
    raise CheckpointLayoutError(f"{ckpt.dir}: vocabulary padded to {saved} rows{made_for}, but this model at TP={tp} "
                                f"pads it to {wanted}; {fix}")


def load_model_weights(model: torch.nn.Module, ckpt_dir: str | Path, prefix: str = "") -> None:
    """dist_checkpointing.load of the model's sharded state dict, then load_state_dict.

    `_extra_state` objects that the checkpoint lacks (e.g. TE's, when the checkpoint was written with the local
    spec) are dropped from the request instead of failing the load; tensors must all be there.
    """
    ckpt = CheckpointReader(ckpt_dir)
    check_vocab_padding(model, ckpt)
    saved = set(ckpt.metadata.state_dict_metadata)
    sharded = model.sharded_state_dict(prefix=prefix)
    skipped = [k for k, v in sharded.items() if isinstance(v, ShardedObject) and v.unique_key not in saved]
    for k in skipped:
        del sharded[k]
    state = dist_checkpointing.load(sharded, str(ckpt.dir))
    # load() merges in the checkpoint's common state (a training checkpoint's step, sampler, ...): not weights
    state = {k: v for k, v in state.items() if k in sharded}
    if prefix:
        state = {k.removeprefix(prefix): v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not m.endswith("_extra_state")]
    if missing or unexpected:
        raise CheckpointLayoutError(f"{ckpt_dir}: state dict mismatch, missing={missing[:3]} unexpected={unexpected[:3]}")
    if skipped:
        logger.debug("load: %d _extra_state objects not in %s (left at defaults)", len(skipped), ckpt_dir)


def save_model_weights(model: torch.nn.Module, out_dir: str | Path, arch, hf_side_dir: str | Path | None = None,
                       make_vocab_size_divisible_by: int = 128) -> Path:
    """Collective: megatron's dist_checkpointing.save of the model, written beside `out_dir` and renamed into place.

    Also writes our record (prefix_rft.json) and the HF config/tokenizer files, so the result converts back to HF.
    """
    from prefix_rft_megatron.checkpoint_io.hf_io import copy_side_files
    from prefix_rft_megatron.checkpoint_io import HF_SUBDIR, META_FILE
    from prefix_rft_megatron.checkpoint_io.dist_save import save_sharded_atomically

    out = Path(out_dir)
    # parallel_state is only safe to ask here, on the collective path, not inside rank 0's `finish`
    meta = {"arch": arch.to_dict(), "padded_vocab_size": model.vocab_size if hasattr(model, "vocab_size") else None,
            "tp": parallel_state.get_tensor_model_parallel_world_size(),
            "pp": parallel_state.get_pipeline_model_parallel_world_size(),
            "make_vocab_size_divisible_by": make_vocab_size_divisible_by}

    def finish(tmp: Path) -> None:  # our record and the HF side files, so the result converts back to HF
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
        if hf_side_dir is not None:
            (tmp / HF_SUBDIR).mkdir(exist_ok=True)
            copy_side_files(hf_side_dir, tmp / HF_SUBDIR)

    save_sharded_atomically(model.sharded_state_dict(), out, out.parent / f".{out.name}.partial", finish)
    return out
