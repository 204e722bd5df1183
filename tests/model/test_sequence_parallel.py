"""Sequence parallelism at TP=2 (gloo, fp32) gives the loss and every gradient of TP=2 without it.

SP changes only where activations live (split along the sequence between TP ranks outside attention and MLP) and
which collectives run (all-gather / reduce-scatter instead of all-reduce), so results agree to fp32 round-off of
reordered sums: measured 1.5e-8 on the largest gradient difference; bound 1e-6.
"""

import torch

from distributed import run_torchrun

TOL = 1e-6


def test_sp_equals_no_sp_at_tp2(tmp_path):
    runs = {}
    for sp in (0, 1):
        run_torchrun("sp_equivalence.py", str(sp), str(tmp_path / f"sp{sp}.pt"), nproc=2)
        runs[sp] = torch.load(tmp_path / f"sp{sp}.pt")
    off, on = runs[0], runs[1]
    assert not off["sp_active"] and on["sp_active"] and on["norms_marked"]
    assert torch.allclose(on["loss"], off["loss"], rtol=0, atol=TOL), (on["loss"], off["loss"])
    assert set(on["grads"]) == set(off["grads"]) and len(off["grads"]) >= 20
    for name, ref in off["grads"].items():
        assert ref.abs().max() > 0, name  # every parameter really received gradient
        assert torch.allclose(on["grads"][name], ref, rtol=0, atol=TOL), (name, (on["grads"][name] - ref).abs().max())
