"""Every collective of the package goes through parallel/collectives.py, which checks each tensor's device against
the devices its group's backend serves. Under the "nccl" rule a CPU run fails where a GPU cluster would: NCCL takes
CUDA tensors only, so a CPU tensor is legal only in a group with a CPU backend (the default group's
"cpu:gloo,cuda:nccl" and the groups megatron-core derives from it)."""

import ast
from pathlib import Path

import pytest

from distributed import run_torchrun_results
from prefix_rft_megatron.parallel.backends import backend_devices, process_group_backend, weight_update_backend

PACKAGE = Path(__file__).resolve().parents[2] / "prefix_rft_megatron"
COLLECTIVES = {"all_reduce", "all_gather", "all_gather_into_tensor", "broadcast", "barrier", "send", "recv",
               "isend", "irecv", "scatter", "gather", "reduce", "reduce_scatter", "all_to_all", "all_gather_object",
               "broadcast_object_list", "scatter_object_list", "gather_object", "send_object_list",
               "recv_object_list"}


def test_backends_per_device():
    assert process_group_backend("cuda") == "cpu:gloo,cuda:nccl"
    assert backend_devices(process_group_backend("cuda")) == {"cpu", "cuda"}
    assert process_group_backend("cpu") == "gloo" and backend_devices("gloo") == {"cpu"}
    assert weight_update_backend("cuda") == "nccl" and backend_devices("nccl") == {"cuda"}
    assert weight_update_backend("cpu") == "gloo"


def test_package_calls_collectives_only_through_the_helper():
    """A `dist.all_reduce(...)` (or any torch.distributed collective) outside parallel/collectives.py would bypass
    the device check."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "parallel" / "collectives.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVES
                    and ast.unparse(node.func.value) in ("dist", "torch.distributed")):
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {ast.unparse(node.func)}")
    assert not offenders, offenders


@pytest.mark.parametrize("tp,pp,nproc", [(1, 1, 2), (2, 1, 2), (1, 2, 2)], ids=["dp2", "tp2", "pp2"])
def test_trainer_step_under_the_nccl_rule(tiny_policy, tmp_path, tp, pp, nproc):
    """A whole step and a save at DP=2, TP=2 (with SP), PP=2: no tensor goes to a group that could not take it on
    a GPU cluster."""
    ranks = run_torchrun_results("trainer_step_collectives.py", str(tiny_policy), str(tmp_path / "run"), str(tp),
                                 str(pp), "0", nproc=nproc, env_extra={"PREFIX_RFT_COLLECTIVE_RULE": "nccl"})
    assert all(r["ok"] for r in ranks), [r["error"] for r in ranks]


def test_a_cpu_tensor_in_a_cuda_only_group_fails(tiny_policy, tmp_path):
    """The planted fault: the DP group declared NCCL-only (as it was when the default group was plain "nccl"); the
    step's first CPU tensor into it (the prefix-entropy threshold's gather) is refused, on every rank."""
    ranks = run_torchrun_results("trainer_step_collectives.py", str(tiny_policy), str(tmp_path / "run"), "1", "1",
                                 "1", nproc=2, env_extra={"PREFIX_RFT_COLLECTIVE_RULE": "nccl"})
    for r in ranks:
        assert not r["ok"]
        assert r["error"].startswith("all_gather: a cpu tensor") and "serves ['cuda'] tensors only" in r["error"]
