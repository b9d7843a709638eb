"""The measured amplitude transfer table of an SLM encoding in the twin's layers."""
import numpy as np
import pytest

from twin.layers import Imperfections, OpticalLinear, gaussian_illumination, neighbour_crosstalk
from twin.losses import mse_loss, one_hot
from twin.network import OpticalNetwork


def lut_like_table(bits=6):
    """A staircase like an encoder's: steps at 2**bits phase-like positions, a slight compression
    and a wiggle (response residuals)."""
    edges = np.sin(np.linspace(-np.pi / 2, np.pi / 2, 2 ** bits + 1)[1:-1])
    mids = np.concatenate([[-1.0], 0.5 * (edges[1:] + edges[:-1]), [1.0]])
    return edges, 0.97 * mids + 0.004 * np.sin(7 * mids)


def test_layer_realises_the_staircase_value_of_each_weight():
    rng = np.random.default_rng(1)
    edges, values = lut_like_table()
    w_max = 1.7
    gain = gaussian_illumination(6, 5, 1.1)
    layer = OpticalLinear(5, 6, weights=rng.uniform(-2.2, 2.2, (6, 5)),
                          imperfections=Imperfections(gain=gain, transfer=(edges, values), w_max=w_max))
    a = np.clip(layer.weights / w_max, -1, 1)
    step = np.array([[np.sum(edges <= v) for v in row] for row in a])      # step index by counting
    expect = w_max * values[step]
    np.testing.assert_allclose(layer.quantised(), expect, atol=1e-12)
    x = rng.uniform(0, 1, (4, 5))
    np.testing.assert_allclose(layer.forward(x, keep=False), x @ (gain * expect).T, atol=1e-12)
    # out-of-range weights take the staircase's end values
    assert np.all(np.isin(layer.quantised()[np.abs(layer.weights) > w_max] / w_max, values[[0, -1]]))


def test_table_agrees_with_the_calibration_lookup():
    from calibration.slm_fit import realise_amplitudes
    t = lut_like_table(bits=8)
    rng = np.random.default_rng(2)
    w = rng.uniform(-1.2, 1.2, (7, 9))
    layer = OpticalLinear(9, 7, weights=w, imperfections=Imperfections(transfer=t, w_max=1.0))
    np.testing.assert_array_equal(layer.quantised(), realise_amplitudes(t, w))


def test_transfer_passes_gradient_straight_through():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (6, 5))
    y = one_hot(rng.integers(0, 3, 6), 3)

    def net(transfer):
        imps = [Imperfections(gain=gaussian_illumination(o, i, 0.9), crosstalk=neighbour_crosstalk(o, 0.05),
                              stray=0.03 * np.ones(o), transfer=transfer, w_max=2.0 if transfer is not None else None)
                for i, o in ((5, 4), (4, 3))]
        return OpticalNetwork([5, 4, 3], absorber="thin", alpha0=3.0, rule="exact", imperfections=imps, seed=4,
                              init_scale=1.5)
    tabled, plain = net(lut_like_table()), net(None)
    plain.set_weights([layer.quantised() for layer in tabled.layers])
    assert any(np.abs(lt.quantised() - lt.weights).max() > 1e-3 for lt in tabled.layers)
    grads = []
    for n in (tabled, plain):
        fw = n.forward(x)
        _, d = mse_loss(fw.output, y)
        grads.append(n.backward(d).grads)
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)


def test_bad_tables_are_refused():
    with pytest.raises(ValueError, match="not both"):
        OpticalLinear(2, 2, imperfections=Imperfections(levels=8, transfer=lut_like_table(), w_max=1.0))
    with pytest.raises(ValueError, match="w_max"):
        OpticalLinear(2, 2, imperfections=Imperfections(transfer=lut_like_table()))
    with pytest.raises(ValueError, match="edges, values"):
        OpticalLinear(2, 2, imperfections=Imperfections(transfer=(np.array([0.0]), np.array([0.0, np.nan])),
                                                        w_max=1.0))
    with pytest.raises(ValueError, match="edges, values"):
        OpticalLinear(2, 2, imperfections=Imperfections(transfer=(np.array([0.1, 0.0]), np.zeros(3)), w_max=1.0))
