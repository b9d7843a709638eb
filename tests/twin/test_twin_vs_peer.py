"""benchmarks/twin_vs_peer.py: torch as an independent oracle of the twin's gradients, and a tiny run."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from twin.losses import mse_loss, one_hot
from twin.network import OpticalNetwork

PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "twin_vs_peer.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("twin_vs_peer", PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_lean_torch_autograd_gives_the_twins_probe_rule_gradients():
    """torch autograd through the same maths == the twin's hand-written backward (float32 tolerance)."""
    torch = pytest.importorskip("torch")
    mod = _bench_module()
    sizes = [30, 16, 16, 10]
    net = OpticalNetwork(sizes, absorber="thin", alpha0=mod.ALPHA0, rule="probe", init_scale=2.0, seed=4,
                         dtype="float64")
    rng = np.random.default_rng(0)
    x, y = rng.uniform(0, 1, (12, sizes[0])), one_hot(rng.integers(0, 10, 12), 10)
    lean = mod.LeanTorch(torch, sizes, None, None, weights=net.get_weights())
    lean.loss(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.float32))).backward()
    fw = net.forward(x)
    grads = net.backward(mse_loss(fw.output, y)[1]).grads
    for w, g in zip(lean.weights, grads):
        # F.mse_loss averages over batch x outputs, the twin's MSE is 0.5 x sum / batch
        g_torch = w.grad.numpy().astype(np.float64) * sizes[-1] / 2
        assert np.linalg.norm(g_torch - g) <= 1e-5 * np.linalg.norm(g)


def test_tiny_run_prints_ratios_and_skips_cleanly_without_torch(monkeypatch, capsys):
    mod = _bench_module()
    argv = ["--threads", "1", "--widths", "16", "--batches", "8", "--repeats", "1", "--seconds", "0.01",
            "--n-samples", "64"]
    monkeypatch.setitem(sys.modules, "torch", None)      # as if torch were not installed
    assert mod.main(argv) == 0
    assert "torch is not installed" in json.loads(capsys.readouterr().out)["skipped"]
    monkeypatch.undo()
    pytest.importorskip("torch")
    assert mod.main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    (row,) = out["results"]
    assert (row["threads"], row["width"], row["batch"]) == (1, 16, 8)
    assert set(row["samples_per_s"]) == {"twin", "twin_imperfect", "lean_torch"}
    assert all(v > 0 for v in row["ratio"].values())
