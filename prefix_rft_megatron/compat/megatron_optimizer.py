"""megatron-core 0.16's distributed optimizer on the torch-Adam path (no TE/apex): its per-parameter Adam `step`
across save and load, fixed where it is wrong (each function says how). Checked at import: megatron-core 0.16.x.

Only torch's Adam / AdamW keep `step` per parameter. Transformer Engine's FusedAdam (what megatron-core picks when TE
imports) and apex's keep it in `param_groups[i]["step"]`, and TE's `state_dict()` / `load_state_dict()` look every
per-parameter key up in a map of exp_avg / exp_avg_sq / master_param: a per-parameter `step` there is KeyError
'step' (TE v1.13-v2.18, `get_unscaled_state` / `_initialize_state`). So every shim here touches only the inner
optimizers `keeps_step_per_parameter` admits; megatron-core's own TE/apex branch carries their step.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from megatron.core.optimizer.distrib_optimizer import DistributedOptimizer

from prefix_rft_megatron.compat import require

require("megatron-core")


def init_empty_adam_state(optimizer) -> None:
    """Give a fresh optimizer Adam state (zeros, step 0) so that its sharded state dict can be built to load into.

    megatron-core's init_state_fn for torch Adam creates exp_avg/exp_avg_sq but no `step`, and the distributed
    optimizer's state_dict() asserts on it (the TE/apex path keeps step elsewhere). The load overwrites all of it.
    """
    for inner in _inner_optimizers(optimizer):
        if not keeps_step_per_parameter(inner):
            continue
        for group in inner.param_groups:
            for p in group["params"]:
                state = inner.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p.data)
                    state["exp_avg_sq"] = torch.zeros_like(p.data)
                state.setdefault("step", torch.tensor(0.0))


def keeps_step_per_parameter(inner) -> bool:
    """The torch optimizers these shims were written for (torch.optim.Adam / AdamW), not TE's or apex's FusedAdam."""
    return isinstance(inner, (torch.optim.Adam, torch.optim.AdamW))


def _inner_optimizers(optimizer):
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        inner = getattr(opt, "optimizer", None)
        if inner is not None:
            yield inner


def restore_adam_steps(optimizer) -> None:
    """Give every parameter its own Adam `step`, equal to the count the checkpoint recorded.

    megatron-core 0.16's DistributedOptimizer on the torch-Adam path (no TE/apex) records the step in the param
    groups, but after load_state_dict the per-parameter `step` that torch Adam's bias correction reads was 0 here, and
    where it is restored it is ONE tensor shared by all parameters (torch increments it in place per parameter).
    Either way a resumed run would diverge from an uninterrupted one (tests/train/test_resume.py catches it).
    """
    for inner in _inner_optimizers(optimizer):
        if not keeps_step_per_parameter(inner):
            continue
        for group in inner.param_groups:
            if "step" not in group:
                continue
            for p in group["params"]:
                if p in inner.state:
                    inner.state[p]["step"] = torch.tensor(float(group["step"]))


@contextmanager
def fully_reshardable_load_keeps_step(optimizer):
    """Work around a megatron-core 0.16 bug on the torch-Adam path (no TE/apex) when loading "fully_reshardable".

    DistributedOptimizer.load_state_dict first puts `step` back into every parameter's Adam state (from the param
    groups); load_parameter_state_from_fully_reshardable then hands _set_main_param_and_optimizer_states the loaded
    tensors without `step` (it skips it on purpose), and that method copies every key of the parameter's state from
    them: KeyError 'step'. For the duration of the load only, a missing `step` is filled here with the state's own
    step (copied onto itself); _restore_adam_steps then gives every parameter its own step from the param groups.
    """
    patched = []
    for opt in getattr(optimizer, "chained_optimizers", [optimizer]):
        if (not isinstance(opt, DistributedOptimizer) or opt.config.use_precision_aware_optimizer_no_fp8_or_ds_fp8
                or not keeps_step_per_parameter(opt.optimizer)):
            continue  # the precision-aware branch sets only the keys it is given; TE / apex keep step per group

        def set_states(model_param, tensors, _opt=opt, _orig=opt._set_main_param_and_optimizer_states):
            if "step" not in tensors:
                group_index, group_order = _opt.model_param_group_index_map[model_param]
                main_param = _opt.optimizer.param_groups[group_index]["params"][group_order]
                step = _opt.optimizer.state[main_param].get("step")
                if step is not None:
                    tensors = {**tensors, "step": step}
            _orig(model_param, tensors)

        opt._set_main_param_and_optimizer_states = set_states  # an instance attribute shadows the class method
        patched.append(opt)
    try:
        yield
    finally:
        for opt in patched:
            del opt._set_main_param_and_optimizer_states
