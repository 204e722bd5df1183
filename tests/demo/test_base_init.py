"""The demo's base inits drawn by parallel jobs are the same weights as drawn alone: seed s's init does not depend on
which other init another thread draws at the same time (the first study run's bases 1 and 3 did)."""

import threading

from safetensors.torch import load_file

from prefix_rft_megatron.demo.driver import Context


def _weights(hf_dir):
    return {k: v for f in sorted(hf_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


def test_inits_drawn_in_parallel_equal_inits_drawn_alone(tmp_path):
    alone = Context(tmp_path / "alone", [], None, 0, [], jobs=1)
    parallel = Context(tmp_path / "parallel", [], None, 0, [], jobs=2)
    expected = {s: _weights(alone.init_base(s)) for s in (1, 3)}
    threads = [threading.Thread(target=parallel.init_base, args=(s,)) for s in (1, 3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in (1, 3):
        got = _weights(tmp_path / "parallel" / "bases" / f"seed{s}" / "init")
        assert got.keys() == expected[s].keys()
        assert all((got[k] == expected[s][k]).all() for k in got), f"seed {s}: other weights when drawn in parallel"
    assert not all((expected[1][k] == expected[3][k]).all() for k in expected[1])  # seeds differ at all
