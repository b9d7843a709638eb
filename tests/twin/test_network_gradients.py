"""Backward passes against finite differences, torch-free: the 'exact' rule is the true gradient."""
import numpy as np
import pytest

from twin.absorber import make_absorber
from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk
from twin.losses import cross_entropy_loss, mse_loss, one_hot
from twin.network import OpticalNetwork


def imperfect_net(model="thin", rule="exact", nonreciprocity=False, levels=None, seed=3):
    rng = np.random.default_rng(seed)
    defect_rng = np.random.default_rng(seed + 100)
    sizes = [5, 4, 3]
    imps = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        imps.append(Imperfections(
            gain=gaussian_illumination(n_out, n_in, 0.9),
            levels=levels, w_max=2.0 if levels else None,
            stray=0.05 * rng.standard_normal(n_out),
            crosstalk=neighbour_crosstalk(n_out, 0.07),
            readout_noise=0.01,
            nonreciprocity=0.05 * defect_rng.standard_normal((n_out, n_in)) if nonreciprocity else None))
    return OpticalNetwork(sizes, absorber=make_absorber(model, alpha0=3.0, i_sat=0.8), rule=rule,
                          imperfections=imps, init_scale=1.5, seed=seed, dtype="float64")


def loss_of(net, x, y, loss_fn, noise_seed=11):
    out = net.forward(x, rng=np.random.default_rng(noise_seed)).output
    return loss_fn(out, y)


def numeric_gradient(net, x, y, loss_fn, h=1e-5):
    grads = []
    for layer in net.layers:
        g = np.zeros_like(layer.weights)
        for idx in np.ndindex(*g.shape):
            w0 = layer.weights[idx]
            layer.weights[idx] = w0 + h
            lp, _ = loss_of(net, x, y, loss_fn)
            layer.weights[idx] = w0 - h
            lm, _ = loss_of(net, x, y, loss_fn)
            layer.weights[idx] = w0
            g[idx] = (lp - lm) / (2 * h)
        grads.append(g)
    return grads


def analytic_gradient(net, x, y, loss_fn):
    _, d = loss_of(net, x, y, loss_fn)
    return net.backward(d).grads


@pytest.mark.parametrize("model", ["thin", "twolevel", "doppler"])
@pytest.mark.parametrize("loss_fn", [mse_loss, cross_entropy_loss])
def test_exact_rule_equals_finite_differences_with_all_hooks_on(model, loss_fn):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (7, 5))
    y = one_hot(rng.integers(0, 3, 7), 3)
    net = imperfect_net(model)
    fd = numeric_gradient(net, x, y, loss_fn)
    an = analytic_gradient(net, x, y, loss_fn)
    for a, f in zip(an, fd):
        np.testing.assert_allclose(a, f, rtol=1e-6, atol=1e-8 * np.abs(f).max())


def test_quantisation_passes_gradient_straight_through():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (6, 5))
    y = one_hot(rng.integers(0, 3, 6), 3)
    q = imperfect_net(levels=17)
    # the same network with the quantised weights programmed and no quantiser
    plain = imperfect_net(levels=None)
    plain.set_weights([layer.quantised() for layer in q.layers])
    assert any(np.abs(lq.quantised() - lq.weights).max() > 1e-3 for lq in q.layers)
    for a, b in zip(analytic_gradient(q, x, y, mse_loss), analytic_gradient(plain, x, y, mse_loss)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    # the realised weights sit on the level grid
    step = 4.0 / 16
    k = (q.layers[0].quantised() + 2.0) / step
    np.testing.assert_allclose(k, np.round(k), atol=1e-9)


def test_nonreciprocity_breaks_the_gradient_and_probe_rule_differs():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (7, 5))
    y = one_hot(rng.integers(0, 3, 7), 3)
    exact = analytic_gradient(imperfect_net(), x, y, mse_loss)
    broken = analytic_gradient(imperfect_net(nonreciprocity=True), x, y, mse_loss)
    probe = analytic_gradient(imperfect_net(rule="probe"), x, y, mse_loss)
    # the last layer's gradient does not pass the defect or the cell
    np.testing.assert_allclose(broken[1], exact[1], rtol=1e-12)
    np.testing.assert_allclose(probe[1], exact[1], rtol=1e-12)
    assert np.abs(broken[0] - exact[0]).max() > 1e-3 * np.abs(exact[0]).max()
    assert np.abs(probe[0] - exact[0]).max() > 1e-3 * np.abs(exact[0]).max()
    # probe <= derivative elementwise and same sign, so the first-layer update stays aligned
    cos = np.sum(probe[0] * exact[0]) / np.linalg.norm(probe[0]) / np.linalg.norm(exact[0])
    assert cos > 0.8


def test_probe_rule_backward_is_transposed_matrix_times_probe_transmission():
    net = OpticalNetwork([3, 4, 2], absorber=make_absorber("thin", alpha0=5.0), rule="probe", seed=5, dtype="float64")
    x = np.random.default_rng(0).uniform(0, 1, (2, 3))
    fw = net.forward(x)
    d2 = np.array([[0.3, -0.2], [0.1, 0.4]])
    bw = net.backward(d2)
    expect = (d2 @ net.layers[1].weights) * net.absorber.probe(fw.pre[0])
    np.testing.assert_allclose(bw.errors[0], expect, rtol=1e-14)
    np.testing.assert_allclose(bw.grads[1], d2.T @ fw.post[1], rtol=1e-14)
    np.testing.assert_allclose(bw.grads[0], expect.T @ x, rtol=1e-14)


def test_probe_self_saturation_makes_backward_nonlinear_and_reduces_to_weak_probe():
    ab = make_absorber("thin", alpha0=8.0)
    x = np.random.default_rng(0).uniform(0, 1, (3, 3))
    d2 = np.array([[0.3, -0.2], [0.1, 0.4], [-0.5, 0.05]])
    res = {}
    for p in (0.0, 1e-9, 2.0):
        net = OpticalNetwork([3, 4, 2], absorber=ab, rule="probe", probe_strength=p, seed=5, dtype="float64")
        net.forward(x)
        res[p] = net.backward(d2).errors[0]
    np.testing.assert_allclose(res[1e-9], res[0.0], rtol=1e-7)
    # a strong probe bleaches the cell: more transmission than the weak probe
    assert np.all(np.abs(res[2.0]) >= np.abs(res[0.0]) - 1e-15)
    assert np.abs(res[2.0]).sum() > 1.05 * np.abs(res[0.0]).sum()


def test_optical_update_is_outer_product_of_injected_error():
    imps = [Imperfections(gain=gaussian_illumination(4, 3, 0.7), crosstalk=neighbour_crosstalk(4, 0.1)),
            Imperfections()]
    net = OpticalNetwork([3, 4, 2], absorber="thin", alpha0=2.0, imperfections=imps, update="optical", dtype="float64")
    x = np.random.default_rng(0).uniform(0, 1, (5, 3))
    fw = net.forward(x)
    bw = net.backward(np.ones((5, 2)))
    np.testing.assert_allclose(bw.grads[0], bw.errors[0].T @ x, rtol=1e-14)
    np.testing.assert_allclose(bw.grads[1], bw.errors[1].T @ fw.post[1], rtol=1e-14)


def test_bad_shapes_and_values():
    with pytest.raises(ValueError, match="shape"):
        OpticalNetwork([3, 4, 2]).forward(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="gain"):
        OpticalNetwork([3, 4, 2], imperfections=[Imperfections(gain=np.ones((3, 3))), None])
    with pytest.raises(ValueError, match="w_max"):
        OpticalNetwork([3, 4, 2], imperfections=[Imperfections(levels=8), None])
    with pytest.raises(ValueError, match="rule"):
        OpticalNetwork([3, 4, 2], rule="guess")


@pytest.mark.parametrize("bands", [1, 2, 9])
def test_banded_and_dense_crosstalk_match_matrix_products(bands):
    from twin.layers import OpticalLinear
    rng = np.random.default_rng(bands)
    n = 10
    c = np.eye(n)
    for k in range(1, bands + 1):
        c += np.diag(rng.normal(0, 0.1, n - k), k) + np.diag(rng.normal(0, 0.1, n - k), -k)
    layer = OpticalLinear(6, n, imperfections=Imperfections(crosstalk=c), rng=0)
    a = rng.normal(size=(4, 6))
    np.testing.assert_allclose(layer.forward(a), a @ (c @ layer.weights).T, rtol=1e-12)
    d = rng.normal(size=(4, n))
    d_in, grad = layer.backward(d)
    np.testing.assert_allclose(d_in, d @ c @ layer.weights, rtol=1e-12)
    np.testing.assert_allclose(grad, (d @ c).T @ a, rtol=1e-12)


def test_backward_at_measured_values_is_physics_aware_training():
    net = imperfect_net("twolevel", rule="probe")
    x = np.random.default_rng(4).uniform(0, 1, (6, 5))
    d = np.random.default_rng(5).normal(size=(6, 3))
    fw = net.forward(x, rng=np.random.default_rng(0))
    ref = net.backward(d)
    other = imperfect_net("twolevel", rule="probe")
    again = other.backward_at(fw, d)
    for a, b in zip(ref.grads, again.grads):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    # measured activations that differ from the twin's own change the step accordingly
    shifted = type(fw)(pre=[p * 1.1 for p in fw.pre], post=[fw.post[0], fw.post[1] * 0.9], output=fw.output)
    moved = other.backward_at(shifted, d)
    np.testing.assert_allclose(moved.grads[1], 0.9 * ref.grads[1], rtol=1e-12)
    slope = other.absorber.probe(shifted.pre[0])
    d_hidden = other.layers[1]._mix(d, transpose=True) @ other.layers[1].slm_matrix()
    np.testing.assert_allclose(moved.errors[0], d_hidden * slope, rtol=1e-12)
    with pytest.raises(ValueError, match="layers"):
        other.backward_at(type(fw)(pre=fw.pre[:1], post=fw.post[:1], output=fw.output), d)


def test_backward_gain_changes_only_the_backward_path():
    from twin.layers import OpticalLinear
    rng = np.random.default_rng(7)
    g, gb = rng.uniform(0.5, 1, (3, 4)), rng.uniform(0.5, 1, (3, 4))
    layer = OpticalLinear(4, 3, imperfections=Imperfections(gain=g, backward_gain=gb), rng=1)
    a, d = rng.normal(size=(2, 4)), rng.normal(size=(2, 3))
    np.testing.assert_allclose(layer.forward(a), a @ (g * layer.weights).T)
    d_in, grad = layer.backward(d)
    np.testing.assert_allclose(d_in, d @ (gb * layer.weights))
    np.testing.assert_allclose(grad, g * (d.T @ a))
