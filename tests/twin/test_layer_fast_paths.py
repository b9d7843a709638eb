"""The factorised hot path of OpticalLinear against the plain matrix definitions.

The layer keeps G * Q(W) as row / column scalings and puts the crosstalk on whichever is
smaller (matrix or batch), so one layer runs in 'vector', 'fold' or 'batch' mode depending
on the batch size.  Every mode must realise the same physics as the reference matrices
``realised_matrix()`` / ``slm_matrix()`` built elementwise from the imperfections.
"""
import numpy as np
import pytest
from scipy import stats

from twin.absorber import ThinAbsorber, make_absorber
from twin.layers import (Imperfections, OpticalLinear, _rank_one, _RowMap, gaussian_illumination,
                         gaussian_noise32, neighbour_crosstalk)
from twin.losses import mse_loss, one_hot
from twin.network import OpticalNetwork

N_IN, N_OUT = 24, 20   # n_out > 16: banded crosstalk takes the shifted-pass path


def make_layer(gain, levels, crosstalk, seed=0):
    rng = np.random.default_rng(seed)
    g = {None: None,
         "separable": gaussian_illumination(N_OUT, N_IN, 0.8),
         "general": rng.uniform(0.4, 1.0, (N_OUT, N_IN))}[gain]
    if crosstalk == "banded":
        c = neighbour_crosstalk(N_OUT, 0.05) + np.diag(rng.normal(0, 0.02, N_OUT - 2), 2)
    elif crosstalk == "dense":
        c = np.eye(N_OUT) + rng.normal(0, 0.02, (N_OUT, N_OUT))
    else:
        c = None
    imp = Imperfections(gain=g, levels=levels, w_max=0.5 if levels else None,
                        stray=0.03 * rng.standard_normal(N_OUT), crosstalk=c)
    layer = OpticalLinear(N_IN, N_OUT, imperfections=imp, rng=seed, init_scale=2.0)
    layer.weights[0, :3] = [0.7, -0.9, 0.49]    # beyond +-w_max: the quantiser clips
    return layer


def expected_mode(layer, batch):
    if layer._vec_ok and batch < N_OUT and N_IN > N_OUT:
        return "vector"
    if layer._emap is not None and N_IN < batch:
        return "fold"
    return "batch"


@pytest.mark.parametrize("batch", [8, 22, 30])
@pytest.mark.parametrize("crosstalk", [None, "banded", "dense"])
@pytest.mark.parametrize("levels", [None, 256, 17])
@pytest.mark.parametrize("gain", [None, "separable", "general"])
def test_every_mode_realises_the_reference_matrices(gain, levels, crosstalk, batch):
    layer = make_layer(gain, levels, crosstalk)
    imp = layer.imperfections
    rng = np.random.default_rng(1)
    a = rng.uniform(-1, 1, (batch, N_IN))
    d = rng.normal(size=(batch, N_OUT))
    r = layer.realised_matrix()
    z = layer.forward(a)
    assert layer._mode == expected_mode(layer, batch)
    np.testing.assert_allclose(z, a @ r.T + imp.stray, rtol=1e-12, atol=1e-13)
    d_in, grad = layer.backward(d)
    np.testing.assert_allclose(d_in, d @ r, rtol=1e-12, atol=1e-13)
    d_slm = d if imp.crosstalk is None else d @ imp.crosstalk
    g = 1.0 if imp.gain is None else imp.gain
    np.testing.assert_allclose(grad, g * (d_slm.T @ a), rtol=1e-12, atol=1e-13)
    if levels:   # the realised matrix sits on the level grid and inside +-w_max
        q = layer.quantised()
        k = (q + 0.5) / (1.0 / (levels - 1))
        np.testing.assert_allclose(k, np.round(k), atol=1e-9)
        assert np.abs(q).max() <= 0.5 + 1e-12


def test_forward_without_keep_leaves_the_backward_state_alone():
    layer = make_layer("separable", 256, "banded")
    rng = np.random.default_rng(2)
    a, d = rng.uniform(-1, 1, (8, N_IN)), rng.normal(size=(8, N_OUT))
    layer.forward(a)
    ref = layer.backward(d)
    layer.forward(rng.uniform(-1, 1, (30, N_IN)), keep=False)     # another mode, another batch
    layer.forward(rng.uniform(-1, 1, N_IN), keep=False)           # a single 1-D input
    again = layer.backward(d)
    for x, y in zip(ref, again):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("batch", [4, 7, 19, 25])
def test_exact_rule_equals_finite_differences_in_every_mode(batch):
    rng = np.random.default_rng(batch)
    sizes = [6, 20, 18, 3]
    imps = [Imperfections(gain=gaussian_illumination(o, i, 0.9), stray=0.05 * rng.standard_normal(o),
                          crosstalk=neighbour_crosstalk(o, 0.07), readout_noise=0.01)
            for i, o in zip(sizes[:-1], sizes[1:])]
    net = OpticalNetwork(sizes, absorber=make_absorber("thin", alpha0=3.0, i_sat=0.8), rule="exact",
                         imperfections=imps, init_scale=1.5, seed=batch, dtype="float64")
    x = rng.uniform(-1, 1, (batch, sizes[0]))
    y = one_hot(rng.integers(0, 3, batch), 3)

    def loss():
        return mse_loss(net.forward(x, rng=np.random.default_rng(11)).output, y)

    _, dout = loss()
    an = net.backward(dout).grads
    modes = {layer._mode for layer in net.layers}
    h = 1e-5
    for layer, g_an in zip(net.layers, an):
        fd = np.zeros_like(layer.weights)
        for idx in np.ndindex(*fd.shape):
            w0 = layer.weights[idx]
            layer.weights[idx] = w0 + h
            lp, _ = loss()
            layer.weights[idx] = w0 - h
            lm, _ = loss()
            layer.weights[idx] = w0
            fd[idx] = (lp - lm) / (2 * h)
        np.testing.assert_allclose(g_an, fd, rtol=1e-6, atol=1e-8 * np.abs(fd).max())
    assert modes   # (which modes ran is recorded for the parametrisation below)
    if batch == 4:
        assert "vector" in modes
    if batch == 25:
        assert modes == {"fold"}


def test_separable_gain_is_detected_and_a_general_one_is_not():
    g = gaussian_illumination(30, 50, 1.2)
    col, row = _rank_one(g)
    np.testing.assert_allclose(np.outer(col, row), g, rtol=1e-14)
    rng = np.random.default_rng(0)
    assert _rank_one(rng.uniform(0.5, 1, (30, 50))) is None
    assert _rank_one(g + 1e-6 * rng.normal(size=g.shape)) is None
    assert _rank_one(np.zeros((3, 4))) is None


@pytest.mark.parametrize("n", [17, 40])
def test_banded_row_map_matches_dense_products(n):
    rng = np.random.default_rng(n)
    a = np.diag(rng.normal(size=n))
    for k in (1, 3):
        a += np.diag(rng.normal(size=n - k), k) + np.diag(rng.normal(size=n - k), -k)
    a += np.diag(rng.normal(size=n - 2), 2)     # a band on one side only
    m = _RowMap(a)
    assert m.banded
    for shape in [(1, n), (5, n), (2, 3, n), (n,)]:
        z = rng.normal(size=shape)
        np.testing.assert_allclose(m.apply(z), z @ a.T, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(m.apply(z, transpose=True), z @ a, rtol=1e-13, atol=1e-14)
    x = rng.normal(size=(n, 7))
    np.testing.assert_allclose(m.left(x), a @ x, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(m.left(x, transpose=True), a.T @ x, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(m.apply(np.asfortranarray(rng.normal(size=(6, n)))).shape, (6, n))


def test_box_muller_draws_are_standard_normal_and_independent():
    rng = np.random.default_rng(0)
    n, sigma = 400_001, 0.37
    x = gaussian_noise32(n, rng, sigma).astype(np.float64) / sigma
    assert x.shape == (n,)
    assert abs(x.mean()) < 5 / np.sqrt(n)
    assert abs(x.std() - 1) < 5 / np.sqrt(2 * n)
    assert abs(stats.kurtosis(x, fisher=False) - 3) < 5 * np.sqrt(24 / n)
    assert abs(stats.skew(x)) < 5 * np.sqrt(6 / n)
    assert stats.kstest(x, "norm").pvalue > 1e-3
    tail = np.mean(np.abs(x) > 3)        # 0.0027 for a Gaussian
    assert abs(tail - 0.0027) < 5 * np.sqrt(0.0027 / n)
    # the two members of each Box-Muller pair (same radius) are independent
    h = (n + 1) // 2
    p, q = x[:n - h], x[h:]
    assert abs(np.corrcoef(p, q)[0, 1]) < 5 / np.sqrt(n - h)
    assert abs(np.corrcoef(p ** 2, q ** 2)[0, 1]) < 5 / np.sqrt(n - h)
    # neighbours in the output are independent too
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 5 / np.sqrt(n)


def test_extreme_noise_levels_keep_their_scale():
    rng = np.random.default_rng(1)
    for sigma in (1e-25, 1e20):
        x = gaussian_noise32(20_000, rng, sigma)
        assert x.dtype == np.float64
        assert abs(x.std() / sigma - 1) < 0.05


def test_readout_noise_of_layers_and_networks_has_the_set_rms():
    rng = np.random.default_rng(3)
    sizes = [12, 40, 30, 5]
    sigmas = [1e-3, 0.0, 0.2]
    imps = [Imperfections(gain=gaussian_illumination(o, i, 1.0), crosstalk=neighbour_crosstalk(o, 0.03),
                          levels=64, w_max=1.0, readout_noise=s)
            for (i, o), s in zip(zip(sizes[:-1], sizes[1:]), sigmas)]
    net = OpticalNetwork(sizes, absorber="thin", alpha0=4.0, imperfections=imps, seed=0, dtype="float64")
    x = rng.uniform(0, 1, (2000, sizes[0]))
    fw = net.forward(x, rng=np.random.default_rng(5))
    for k, (layer, s) in enumerate(zip(net.layers, sigmas)):
        clean = fw.post[k] @ layer.realised_matrix().T
        resid = fw.pre[k] - clean
        if s == 0:
            np.testing.assert_allclose(resid, 0, atol=1e-12)
        else:
            assert abs(resid.std() / s - 1) < 0.02
            assert abs(resid.mean()) < 5 * s / np.sqrt(resid.size)
    # reproducible for a seed, different for another
    again = net.forward(x, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(again.output, fw.output)
    other = net.forward(x, rng=np.random.default_rng(6))
    assert np.abs(other.output - fw.output).max() > 0
    # a single layer draws its own noise with the same rms
    layer = net.layers[2]
    a = rng.uniform(0, 1, (4000, sizes[2]))
    resid = layer.forward(a, rng=np.random.default_rng(7)) - a @ layer.realised_matrix().T
    assert abs(resid.std() / 0.2 - 1) < 0.02
    with pytest.raises(ValueError, match="noise"):
        layer.forward(a, noise=np.zeros(3))


@pytest.mark.parametrize("i_sat", [1.0, 0.8])
def test_thin_absorber_probe_forward_is_bitwise_transmit_and_probe(i_sat):
    ab = ThinAbsorber(10.0, i_sat)
    z = np.random.default_rng(0).normal(0, 2, (64, 33))
    out, slope = ab.forward(z, "probe")
    np.testing.assert_array_equal(out, ab.transmit(z))
    np.testing.assert_array_equal(slope, ab.probe(z))
