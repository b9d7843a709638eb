"""The Gaussian-spot average shared by the simulated bench and the absorber fits, against
independent integrals."""
import math

import numpy as np
import pytest
from scipy.integrate import quad

from calibration.absorber_spot_fit import spot_amplitude_transmission
from hwio.sim.optics import CellModel
from hwio.sim.truth import AbsorberTruth
from twin.absorber import make_absorber
from twin.spot import spot_average, unit_nodes


def test_gaussian_local_law_matches_closed_form():
    """tau(x) = exp(-x^2): 2 int_0^1 v exp(-r^2 v^2) dv = (1 - exp(-r^2)) / r^2."""
    r = np.array([0.05, 0.5, 1.0, 2.0, 3.5])
    expect = (1.0 - np.exp(-r ** 2)) / r ** 2
    np.testing.assert_allclose(spot_average(lambda x: np.exp(-x ** 2), r), expect, rtol=1e-12)


@pytest.mark.parametrize("model", ["thin", "twolevel", "doppler"])
def test_twin_laws_match_the_mode_overlap_integral(model):
    """The radial mode overlap of the field r exp(-rho^2) with exp(-rho^2), by scipy.quad."""
    law = make_absorber(model, alpha0=5.0, i_sat=1.0)
    for r in (0.4, 2.0, 7.0):
        num = quad(lambda rho: float(law.probe(r * math.exp(-rho ** 2))) * math.exp(-2 * rho ** 2) * rho, 0, 12)[0]
        den = quad(lambda rho: math.exp(-2 * rho ** 2) * rho, 0, 12)[0]
        assert float(spot_average(law.probe, np.array([r]))[0]) == pytest.approx(num / den, rel=1e-7)


def test_simulator_and_fit_average_the_same_law():
    """The simulated cell (its own node count) and the fit's spot law agree to quadrature accuracy."""
    truth = AbsorberTruth(model="twolevel", alpha0=3.0, i_sat=1.0, spot_averaging=True)
    cell = CellModel(truth)
    z = np.array([0.2, 1.0, 3.0, 8.0])
    sim = cell.probe_transmission(z, np.zeros_like(z), 3.0)
    fit = spot_amplitude_transmission("twolevel", z ** 2, 3.0)
    np.testing.assert_allclose(sim, fit, rtol=1e-6)


def test_nodes_are_a_quadrature_on_the_unit_interval():
    v, w = unit_nodes(7)
    assert np.all((v > 0) & (v < 1)) and w.sum() == pytest.approx(1.0, rel=1e-14)
    assert float(w @ v ** 6) == pytest.approx(1.0 / 7.0, rel=1e-13)      # exact for degree <= 13
    with pytest.raises(ValueError, match="n_nodes"):
        unit_nodes(0)
