"""compat/megatron_optimizer.py's Adam-`step` shims apply to torch's Adam only.

Transformer Engine cannot be installed on a CPU machine, so its FusedAdam is represented here by its `state_dict`
contract, written out from TE v1.13-v2.18's transformer_engine/pytorch/optimizers/fused_adam.py (the lines quoted):
`step` lives in param_groups only, and per-parameter keys are looked up in `name_to_dtype_map`
(`get_unscaled_state`: `dtype = self.name_to_dtype_map[state_name]`), so a per-parameter `step` is KeyError 'step'.
apex's FusedAdam (no CPU build either) also keeps `step` per group. The save / resume round trip with torch's AdamW,
the class megatron-core picks here, is tests/train/test_resume.py.
"""

from types import SimpleNamespace

import pytest
import torch

from prefix_rft_megatron.compat.megatron_optimizer import (init_empty_adam_state, keeps_step_per_parameter,
                                                           restore_adam_steps)


class TEFusedAdamContract(torch.optim.Optimizer):
    """What of TE's FusedAdam the shims meet: per-parameter state exp_avg / exp_avg_sq (fp32 here) and a per-group
    step; state_dict / load_state_dict go through the dtype map key by key."""

    def __init__(self, params, lr=1e-3):
        super().__init__(params, dict(lr=lr))
        self.name_to_dtype_map = {"exp_avg": torch.float32, "exp_avg_sq": torch.float32, "master_param": None}

    def get_unscaled_state(self, param, state_name):
        dtype = self.name_to_dtype_map[state_name]  # TE: KeyError for any other key
        return self.state[param][state_name].to(dtype or torch.float32)

    def set_scaled_state(self, param, state_name, value):
        dtype = self.name_to_dtype_map[state_name]  # TE's _initialize_state: the same lookup
        self.state[param][state_name] = value.to(dtype or torch.float32)

    def step(self):
        for group in self.param_groups:
            group["step"] = group.get("step", 0) + 1  # TE: "assume same step across group now"
            for p in group["params"]:
                if not self.state[p]:
                    self.state[p] = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}

    def state_dict(self):
        sd = super().state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        sd["state"] = {i: {name: self.get_unscaled_state(params[i], name) for name in v}
                       for i, v in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for i, v in state_dict["state"].items():
            self.state[params[i]] = {}
            for name, value in v.items():
                self.set_scaled_state(params[i], name, value.float())


def _wrapped(inner):
    return SimpleNamespace(optimizer=inner)  # what megatron's optimizer wrappers expose: `.optimizer`


def test_te_contract_fails_on_a_per_parameter_step():
    """The contract reproduces the resume crash the shims caused when applied to every optimizer."""
    opt = TEFusedAdamContract([torch.nn.Parameter(torch.ones(3))])
    opt.step()
    p = opt.param_groups[0]["params"][0]
    opt.state[p]["step"] = torch.tensor(1.0)
    with pytest.raises(KeyError, match="step"):
        opt.state_dict()


def test_shims_leave_te_fused_adam_alone():
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    opt = TEFusedAdamContract(params)
    assert not keeps_step_per_parameter(opt)
    init_empty_adam_state(_wrapped(opt))  # the load path: a fresh optimizer
    assert all("step" not in opt.state[p] for p in params)
    opt.step()
    opt.step()
    restore_adam_steps(_wrapped(opt))
    sd = opt.state_dict()  # raised KeyError 'step' before the shims checked the class
    assert opt.param_groups[0]["step"] == 2 and all(set(v) == {"exp_avg", "exp_avg_sq"} for v in sd["state"].values())
    again = TEFusedAdamContract([torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))])
    again.load_state_dict(sd)
    assert again.param_groups[0]["step"] == 2


@pytest.mark.parametrize("cls", [torch.optim.Adam, torch.optim.AdamW])
def test_shims_give_torch_adam_a_step_per_parameter(cls):
    params = [torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2))]
    opt = cls(params)
    assert keeps_step_per_parameter(opt)
    init_empty_adam_state(_wrapped(opt))
    assert all(float(opt.state[p]["step"]) == 0.0 for p in params)
    opt.param_groups[0]["step"] = 5  # where megatron's distributed optimizer records it
    restore_adam_steps(_wrapped(opt))
    steps = [opt.state[p]["step"] for p in params]
    assert [float(s) for s in steps] == [5.0, 5.0] and steps[0] is not steps[1]  # one tensor each
