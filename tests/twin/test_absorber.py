"""Absorber laws against physics.md's table, closed forms, identities and finite differences."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp
from scipy.optimize import brentq

from twin.absorber import (DopplerAbsorber, TabulatedAbsorber, ThinAbsorber, TwoLevelAbsorber,
                           make_absorber)

Z = np.linspace(0.0, 12.0, 240001)

# physics.md section 2: alpha0 -> (thin max g'/t, thin max g', z at max g', full max R, at I_in,
#                                  full T=0.5 at I_in, Doppler max R)
TABLE = {
    1: (1.25, 1.05, 1.95, 1.28, 1.28, 0.61, 1.21),
    3: (1.75, 1.10, 2.35, 2.05, 2.05, 4.61, 1.74),
    5: (2.25, 1.13, 2.72, 3.08, 3.08, 8.61, 2.40),
    10: (3.5, 1.16, 3.50, 6.43, 6.43, 18.6, 4.37),
    30: (8.5, 1.19, 5.67, 23.7, 23.7, 58.6, None),
}


@pytest.mark.parametrize("alpha0", sorted(TABLE))
def test_reference_table(alpha0):
    ratio_thin, gmax, z_gmax, r_full, i_rmax, i_half, r_dopp = TABLE[alpha0]
    thin = ThinAbsorber(alpha0)
    r = thin.derivative(Z) / thin.probe(Z)
    assert r.max() == pytest.approx(ratio_thin, rel=0.01)
    assert Z[r.argmax()] == pytest.approx(1.0, rel=0.01)
    d = thin.derivative(Z)
    assert d.max() == pytest.approx(gmax, rel=0.01)
    assert Z[d.argmax()] == pytest.approx(z_gmax, rel=0.01)

    full = TwoLevelAbsorber(alpha0)
    i_in = Z ** 2
    i_out = i_in * full.intensity_transmission(i_in)
    R = (1 + i_in) / (1 + i_out)
    assert R.max() == pytest.approx(r_full, rel=0.01)
    assert i_in[R.argmax()] == pytest.approx(i_rmax, rel=0.01)
    half = brentq(lambda i: full.intensity_transmission(np.array([i]))[0] - 0.5, 1e-9, 1e4)
    assert half == pytest.approx(i_half, rel=0.01)
    if r_dopp is not None:
        dop = DopplerAbsorber(alpha0)
        assert (dop.derivative(Z) / dop.probe(Z)).max() == pytest.approx(r_dopp, rel=0.01)


@pytest.mark.parametrize("alpha0", [1.0, 3.0, 10.0])
def test_full_model_identities(alpha0):
    full = TwoLevelAbsorber(alpha0)
    i_in = np.geomspace(1e-4, 1e3, 200001)
    i_out = i_in * full.intensity_transmission(i_in)
    # ln T + I_in (T - 1) = -alpha0
    T = i_out / i_in
    np.testing.assert_allclose(np.log(T) + i_in * (T - 1), -alpha0, atol=1e-10)
    R = (1 + i_in) / (1 + i_out)
    k = R.argmax()
    assert i_in[k] * i_out[k] == pytest.approx(1.0, rel=1e-3)   # I_in I_out = I_sat^2
    assert R[k] == pytest.approx(i_in[k], rel=1e-3)              # R = I_in/I_sat there
    half = brentq(lambda i: full.intensity_transmission(np.array([i]))[0] - 0.5, 1e-9, 1e5)
    assert half == pytest.approx(2 * (alpha0 - np.log(2)), rel=1e-9)


@pytest.mark.parametrize("cls", [TwoLevelAbsorber, DopplerAbsorber])
@pytest.mark.parametrize("alpha0", [0.3, 3.0, 30.0])
@pytest.mark.parametrize("i_in", [1e-6, 0.2, 1.0, 7.0, 300.0])
def test_full_models_match_ode_integration(cls, alpha0, i_in):
    f = (lambda i: 1 / (1 + i)) if cls is TwoLevelAbsorber else (lambda i: (1 + i) ** -0.5)
    # integrate ln I along the cell: d ln I / dx = -alpha0 f(I), x in [0, 1]
    sol = solve_ivp(lambda x, y: -alpha0 * f(np.exp(y)), (0, 1), [np.log(i_in)], rtol=1e-12, atol=1e-14)
    T_ode = np.exp(sol.y[0, -1]) / i_in
    T = cls(alpha0).intensity_transmission(np.array([i_in]))[0]
    assert T == pytest.approx(T_ode, rel=1e-8)


def test_doppler_accuracy_vectorised_wide_range():
    dop = DopplerAbsorber(10.0, i_sat=2.0)
    z = np.concatenate([-np.geomspace(1e-8, 1e4, 5000), [0.0], np.geomspace(1e-8, 1e4, 5000)])
    out = dop.transmit(z)
    assert np.all(np.isfinite(out))
    s = z ** 2 / 2.0
    s_out = out ** 2 / 2.0
    G = DopplerAbsorber._G
    ok = s > 0
    np.testing.assert_allclose(G(s_out[ok]), G(s[ok]) - 10.0, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("model", ["thin", "twolevel", "doppler"])
@pytest.mark.parametrize("alpha0", [0.1, 3.0, 30.0])
def test_derivative_matches_finite_differences(model, alpha0):
    ab = make_absorber(model, alpha0=alpha0, i_sat=1.7)
    z = np.concatenate([-np.geomspace(1e-3, 50, 60), np.geomspace(1e-3, 50, 60)])
    h = 1e-6 * np.maximum(1.0, np.abs(z))
    fd = (ab.transmit(z + h) - ab.transmit(z - h)) / (2 * h)
    np.testing.assert_allclose(ab.derivative(z), fd, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("model", ["thin", "twolevel", "doppler"])
def test_symmetry_limits_and_forward(model):
    alpha0 = 4.0
    ab = make_absorber(model, alpha0=alpha0)
    z = np.linspace(-30, 30, 1201)
    np.testing.assert_allclose(ab.transmit(-z), -ab.transmit(z), rtol=0, atol=1e-15)
    np.testing.assert_allclose(ab.probe(-z), ab.probe(z), rtol=1e-15)
    # small signal: t = g' = exp(-alpha0/2); bleached: both -> 1
    assert ab.probe(0.0) == pytest.approx(np.exp(-alpha0 / 2), rel=1e-12)
    assert ab.derivative(0.0) == pytest.approx(np.exp(-alpha0 / 2), rel=1e-12)
    assert ab.probe(1e-9) == pytest.approx(np.exp(-alpha0 / 2), rel=1e-9)
    assert ab.probe(1e5) == pytest.approx(1.0, abs=1e-3)
    assert ab.derivative(1e5) == pytest.approx(1.0, abs=1e-3)
    # probe underestimates the derivative, never flips its sign
    assert np.all(ab.derivative(z) >= ab.probe(z) * (1 - 1e-12))
    assert np.all(ab.probe(z) > 0)
    for rule, ref in [("exact", ab.derivative(z)), ("probe", ab.probe(z))]:
        out, slope = ab.forward(z, rule)
        np.testing.assert_allclose(out, ab.transmit(z), rtol=1e-14)
        np.testing.assert_allclose(slope, ref, rtol=1e-14)
    with pytest.raises(ValueError, match="rule"):
        ab.forward(z, "magic")


def test_thin_vs_full_agreement_and_disagreement():
    z = np.linspace(0, 5, 501)
    small = np.abs(ThinAbsorber(0.1).transmit(z) - TwoLevelAbsorber(0.1).transmit(z)).max()
    assert small < 2e-3   # agree at alpha0 = 0.1
    t_thin = ThinAbsorber(3.0).transmit(z)[1:] / z[1:]
    t_full = TwoLevelAbsorber(3.0).transmit(z)[1:] / z[1:]
    rel = np.abs(t_thin / t_full - 1).max()
    assert rel > 0.10     # physics.md: they differ by ~13 % at alpha0 = 3


def test_i_sat_scales_the_input():
    a = ThinAbsorber(5.0, i_sat=4.0)
    b = ThinAbsorber(5.0, i_sat=1.0)
    z = np.linspace(-6, 6, 101)
    np.testing.assert_allclose(a.transmit(z), 2.0 * b.transmit(z / 2.0), rtol=1e-14)


def test_bad_parameters():
    with pytest.raises(ValueError, match="alpha0"):
        ThinAbsorber(-1)
    with pytest.raises(ValueError, match="alpha0"):
        TwoLevelAbsorber(float("nan"))
    with pytest.raises(ValueError, match="i_sat"):
        DopplerAbsorber(1.0, i_sat=0)
    with pytest.raises(ValueError, match="unknown absorber"):
        make_absorber("ruby", alpha0=1)


def test_tabulated_reproduces_model_and_derivative():
    true = TwoLevelAbsorber(6.0, i_sat=1.3)
    tab = TabulatedAbsorber.from_model(true, z_max=8.0, n=600)
    z = np.linspace(-7.5, 7.5, 3001)
    np.testing.assert_allclose(tab.transmit(z), true.transmit(z), atol=2e-4)
    np.testing.assert_allclose(tab.derivative(z), true.derivative(z), atol=5e-3)
    np.testing.assert_allclose(tab.probe(z), true.probe(z), atol=2e-4)
    # derivative is the interpolant's own derivative
    h = 1e-6
    zz = np.linspace(0.05, 7.0, 50)
    np.testing.assert_allclose(tab.derivative(zz), (tab.transmit(zz + h) - tab.transmit(zz - h)) / (2 * h),
                               rtol=1e-4)
    # odd symmetry and bleached extrapolation
    np.testing.assert_allclose(tab.transmit(-z), -tab.transmit(z))
    assert tab.transmit(20.0) == pytest.approx(20.0 * true.transmit(8.0) / 8.0)


def test_tabulated_without_probe_uses_pump_transmission_and_rejects_bad_tables():
    zi = np.linspace(0.1, 5, 30)
    tab = TabulatedAbsorber(zi, ThinAbsorber(2.0).transmit(zi))
    np.testing.assert_allclose(tab.probe(zi), ThinAbsorber(2.0).probe(zi), rtol=1e-9)
    with pytest.raises(ValueError, match="NaN"):
        TabulatedAbsorber([0, 1, np.nan], [0, 1, 2])
    with pytest.raises(ValueError, match=">= 3"):
        TabulatedAbsorber([0, 1], [0, 1])
    with pytest.raises(ValueError, match="both"):
        TabulatedAbsorber(zi, zi, probe_z=zi)
