"""Calibrated probe correction: R = g'/t against physics.md's table; a corrected probe-rule
network computes the exact gradient and trains exactly as the exact rule does."""
import numpy as np
import pytest

from twin.absorber import DopplerAbsorber, ThinAbsorber, TwoLevelAbsorber
from twin.network import OpticalNetwork
from twin.optim import Adam
from twin.probe_correction import ProbeCorrectedSystem, derivative_ratio
from twin.tasks import load_task
from twin.training import train


@pytest.mark.parametrize("alpha0", [1.0, 3.0, 10.0])
def test_thin_ratio_peaks_at_one_plus_alpha0_over_four(alpha0):
    z = np.linspace(0.0, 5.0, 5001)
    r = derivative_ratio(ThinAbsorber(alpha0), z)
    assert r[0] == pytest.approx(1.0, abs=1e-12)
    assert r.max() == pytest.approx(1 + alpha0 / 4, rel=1e-6)
    assert z[np.argmax(r)] == pytest.approx(1.0, abs=2e-3)
    np.testing.assert_allclose(derivative_ratio(ThinAbsorber(alpha0), -z), r)   # even in z


@pytest.mark.parametrize("model, alpha0, table", [(TwoLevelAbsorber, 3.0, 2.05), (TwoLevelAbsorber, 10.0, 6.43),
                                                  (DopplerAbsorber, 3.0, 1.74), (DopplerAbsorber, 10.0, 4.37)])
def test_full_models_reproduce_the_max_ratio_table(model, alpha0, table):
    z = np.sqrt(np.geomspace(1e-3, 400.0, 6000))        # I_in / I_sat from 1e-3 to 400
    r = derivative_ratio(model(alpha0), z)
    assert r.max() == pytest.approx(table, abs=0.006)
    assert r[0] == pytest.approx(1.0, abs=0.01) and r[-1] < r.max()


def _pair(sizes=(2, 12, 2), alpha0=2.5, seed=3):
    kw = dict(absorber=DopplerAbsorber(alpha0), init_scale=3.0, seed=seed, dtype="float64")
    return OpticalNetwork(list(sizes), rule="probe", **kw), OpticalNetwork(list(sizes), rule="exact", **kw)


def test_corrected_probe_gradient_is_the_exact_gradient():
    probe, exact = _pair()
    rng = np.random.default_rng(0)
    x, d = rng.uniform(0, 1, (16, 2)), rng.normal(size=(16, 2))
    corrected = ProbeCorrectedSystem(probe, probe.absorber)
    corrected.forward(x)
    got = corrected.backward(d)
    exact.forward(x)
    want = exact.backward(d)
    for g, w in zip(got.grads, want.grads):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got.errors[0], want.errors[0], rtol=1e-12, atol=1e-14)
    probe.forward(x)
    raw = probe.backward(d).grads[0]       # uncorrected: biased low by up to 1/R
    assert np.linalg.norm(raw - want.grads[0]) > 0.05 * np.linalg.norm(want.grads[0])


def test_corrected_probe_training_follows_exact_training():
    task = load_task("rings", seed=0, n_samples=200)
    probe, exact = _pair(seed=0)
    h1 = train(ProbeCorrectedSystem(probe, probe.absorber), task, Adam(1e-2), epochs=5, batch=16, seed=0)
    h2 = train(exact, task, Adam(1e-2), epochs=5, batch=16, seed=0)
    for a, b in zip(probe.get_weights(), exact.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(h1.train_loss, h2.train_loss, rtol=1e-10)


def test_misuse_is_refused():
    probe, _ = _pair()
    corrected = ProbeCorrectedSystem(probe, probe.absorber)
    with pytest.raises(RuntimeError, match="forward"):
        corrected.backward(np.zeros((1, 2)))
    with pytest.raises(TypeError, match="absorber"):
        ProbeCorrectedSystem(probe, object())
    with pytest.raises(TypeError, match="system"):
        ProbeCorrectedSystem(object(), probe.absorber)
