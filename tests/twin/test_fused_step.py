"""The fused training step, the flat-buffer Adam and the float32 twin against independent references."""
import numpy as np
import pytest

from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk
from twin.losses import mse_loss, one_hot
from twin.network import OpticalNetwork
from twin.optim import Adam, flat_view

SIZES = [6, 20, 12, 3]


def _imperfections(seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    return [Imperfections(gain=gaussian_illumination(o, i, 1.1), levels=64, w_max=0.6,
                          stray=0.02 * rng.standard_normal(o), crosstalk=neighbour_crosstalk(o, 0.05),
                          readout_noise=noise)
            for i, o in zip(SIZES[:-1], SIZES[1:])]


def _net(dtype, imperfect=True, rule="probe", seed=3, noise=0.01):
    return OpticalNetwork(SIZES, absorber="thin", alpha0=4.0, rule=rule, init_scale=2.0, seed=seed, dtype=dtype,
                          imperfections=_imperfections(noise=noise) if imperfect else None)


def _batch(n=9, seed=1):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, (n, SIZES[0])), one_hot(rng.integers(0, SIZES[-1], n), SIZES[-1])


def _plain_adam(p, g, m, v, t, lr=1e-2, b1=0.9, b2=0.999, eps=1e-8):
    """Textbook Adam (Kingma & Ba, Algorithm 1) on separate arrays."""
    m[...] = b1 * m + (1 - b1) * g
    v[...] = b2 * v + (1 - b2) * g * g
    p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)


@pytest.mark.parametrize("rule", ["probe", "exact"])
def test_fused_step_is_forward_loss_backward_and_textbook_adam(rule):
    """float64: train_step == forward, MSE, backward, Adam (textbook, separate arrays), w_max clip."""
    fused, ref = _net("float64", rule=rule), _net("float64", rule=rule)
    opt = Adam(1e-2)
    params = [w.copy() for w in ref.get_weights()]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for step in range(1, 5):
        x, y = _batch(seed=step)
        lv, out = fused.train_step(x, y, opt, "mse", rng=np.random.default_rng(step))
        fw = ref.forward(x, rng=np.random.default_rng(step))
        lv_ref, d = mse_loss(fw.output, y)
        np.testing.assert_allclose(out, fw.output, rtol=1e-12, atol=1e-14)
        assert lv == pytest.approx(lv_ref, rel=1e-12)
        for k, g in enumerate(ref.backward(d).grads):
            _plain_adam(params[k], g, m[k], v[k], step)
            np.clip(params[k], -0.6, 0.6, out=params[k])
        ref.set_weights(params)
        for a, b in zip(fused.get_weights(), params):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    # Adam's reported state is the textbook moments
    st = opt.state()
    assert st["t"] == 4
    for a, b in zip(st["m"], m):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    for a, b in zip(st["v"], v):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-18)


def test_float32_gradients_match_float64_within_stated_tolerance():
    """float32 passes: weight gradients within 1e-5 of the float64 ones (relative to their norm)."""
    for imperfect in (False, True):
        n64, n32 = _net("float64", imperfect), _net("float32", imperfect)
        for a, b in zip(n32.get_weights(), n64.get_weights()):   # the same draws, rounded
            assert a.dtype == np.float32
            np.testing.assert_array_equal(a, b.astype(np.float32))
        n64.set_weights([w.astype(np.float32) for w in n64.get_weights()])   # compare at equal weights
        x, y = _batch(n=64)
        g = {}
        for name, net in (("64", n64), ("32", n32)):
            fw = net.forward(x, rng=np.random.default_rng(0))
            assert fw.output.dtype == net.dtype
            g[name] = net.backward(mse_loss(fw.output, y)[1]).grads
        for a, b in zip(g["32"], g["64"]):
            assert a.dtype == np.float32
            assert np.linalg.norm(a - b) <= 1e-5 * np.linalg.norm(b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_flat_adam_state_round_trip_continues_exactly(dtype):
    """A resumed run (state saved and loaded as a run file holds it) repeats the uninterrupted one:
    bit for bit in float32, to rounding in float64."""
    net = _net(dtype, imperfect=False)
    opt = Adam(5e-3)
    for s in range(3):
        net.train_step(*_batch(seed=s), opt)
    saved = {k: ([np.array(a) for a in v] if isinstance(v, list) else v) for k, v in opt.state().items()}
    copy = _net(dtype, imperfect=False)
    copy.set_weights(net.get_weights())
    resumed = Adam(5e-3)
    resumed.load_state(saved)
    for s in range(3, 6):
        net.train_step(*_batch(seed=s), opt)
        copy.train_step(*_batch(seed=s), resumed)
    for a, b in zip(net.get_weights(), copy.get_weights()):
        if dtype == "float32":
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-16)


def test_flat_view_only_for_arrays_that_tile_one_buffer():
    buf = np.arange(10.0)
    a, b = buf[:4].reshape(2, 2), buf[4:10].reshape(3, 2)
    fv = flat_view([a, b])
    assert fv is not None and np.shares_memory(fv, buf) and fv.size == 10
    assert flat_view([b, a]) is None                      # out of order
    assert flat_view([a, buf[5:10]]) is None              # a gap
    assert flat_view([np.zeros(3), np.zeros(2)]) is None  # separate arrays
    net = _net("float32")
    assert flat_view(net.get_weights()).size == sum(w.size for w in net.get_weights())


def test_non_finite_loss_leaves_the_weights_and_bad_dtype_is_refused():
    net = _net("float32", imperfect=False)
    before = [w.copy() for w in net.get_weights()]
    x, y = _batch()
    y[0, 0] = np.inf
    lv, _ = net.train_step(x, y, Adam(1e-2))
    assert not np.isfinite(lv)
    for a, b in zip(net.get_weights(), before):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="float32"):
        OpticalNetwork([2, 3, 2], dtype="int32")
    with pytest.raises(ValueError, match="targets"):
        net.train_step(x, y[:, :2], Adam(1e-2))
