"""Hybrid training corrects forward model errors: a 'bench' twin with imperfections the
backward twin does not know still trains, because the forward values are measured."""
import numpy as np

from twin.hybrid import HybridSystem
from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk
from twin.network import OpticalNetwork
from twin.optim import Adam
from twin.tasks import load_task
from twin.training import evaluate, train


def bench_like(seed=0):
    imps = [Imperfections(gain=0.6 + 0.4 * gaussian_illumination(32, 2, 0.8), stray=np.full(32, 0.05)),
            Imperfections(crosstalk=neighbour_crosstalk(2, 0.1))]
    return OpticalNetwork([2, 32, 2], absorber="thin", alpha0=10.0, rule="probe", imperfections=imps,
                          init_scale=3.0, seed=seed)


def test_hybrid_weights_stay_in_sync_and_backward_uses_measured_values():
    bench, twin = bench_like(), OpticalNetwork([2, 32, 2], absorber="thin", alpha0=10.0, seed=5, dtype="float64")
    hyb = HybridSystem(bench, twin)
    for a, b in zip(hyb.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).uniform(0, 1, (4, 2))
    fw = hyb.forward(x)
    np.testing.assert_allclose(fw.output, bench.forward(x).output)
    bw = hyb.backward(np.ones((4, 2)))
    np.testing.assert_allclose(bw.grads[1], np.ones((4, 2)).T @ fw.post[1], rtol=1e-12)


def test_hybrid_beats_insilico_on_an_imperfect_bench():
    task = load_task("moons", seed=0, n_samples=600)
    # in silico: train an ideal twin, deploy to the bench
    ideal = OpticalNetwork([2, 32, 2], absorber="thin", alpha0=10.0, init_scale=3.0, seed=0)
    train(ideal, task, Adam(1e-2), epochs=400, batch=32)
    bench = bench_like()
    bench.set_weights(ideal.get_weights())
    _, acc_insilico = evaluate(bench, task.x_test, task.y_test, 2)
    # hybrid: bench forward, ideal-twin backward
    bench2 = bench_like()
    hyb = HybridSystem(bench2, OpticalNetwork([2, 32, 2], absorber="thin", alpha0=10.0, seed=0))
    train(hyb, task, Adam(1e-2), epochs=400, batch=32)
    _, acc_hybrid = evaluate(bench2, task.x_test, task.y_test, 2)
    assert acc_hybrid >= 0.93
    assert acc_hybrid > acc_insilico + 0.1
