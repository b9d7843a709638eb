"""The SLM calibration record (pure functions on numpy arrays and fits).

The fits of a phase panel live in their own modules:

* :mod:`calibration.slm_phase_fit` -- phase response vs level (power law or monotone spline,
  :mod:`calibration.slm_spline_fit`), inverse LUT, per-region responses;
* :mod:`calibration.interference_fit` -- phases from homodyne spot circles or camera fringes;
* :mod:`calibration.crosstalk_fit` -- pixel-crosstalk blur;
* :mod:`calibration.illumination_fit` -- Gaussian illumination profile.

Here :func:`combine_slm` assembles the ``Fit(name='slm')`` of a calibration from them, and
:func:`transfer_table` / :func:`realise_amplitudes` read the panel's amplitude transfer
staircase back out of it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from calibration.quantities import Fit
from calibration.slm_phase_fit import amplitude_max_quantity

__all__ = ["combine_slm", "transfer_table", "realise_amplitudes"]


# ----------------------------------------------------------------------------- assembly
def combine_slm(response: Fit, *, illumination: Fit | None = None, crosstalk: Fit | None = None,
                regions: Mapping[str, Fit] | None = None) -> Fit:
    """One ``Fit(name='slm')`` from the response fit and the optional illumination, crosstalk
    and per-region fits.

    Quantities ``phase_range_rad``, ``gamma``, ``amplitude_max`` (ranges below 2 pi; from
    ``response``), ``illumination_waist``
    (with ``illumination_x0``, ``illumination_y0``) and ``crosstalk_px`` when given; arrays of
    the response plus ``illumination_map``, and per region ``region_phase_response_rad`` /
    ``region_inverse_lut`` (n_regions, 2**bits) with the names in ``info['regions']``.
    """
    q = {k: response.quantities[k] for k in ("phase_range_rad", "gamma")}
    if "amplitude_max" in response.quantities:
        # from the final range (a procedure may have widened its error after the fit)
        q["amplitude_max"] = amplitude_max_quantity(q["phase_range_rad"])
    arrays = dict(response.arrays)
    info = dict(response.info)
    if illumination is not None:
        q["illumination_waist"] = illumination.quantities["waist"]
        q["illumination_x0"] = illumination.quantities["x0"]
        q["illumination_y0"] = illumination.quantities["y0"]
        arrays["illumination_map"] = illumination.arrays["illumination_map"]
    if crosstalk is not None:
        q["crosstalk_px"] = crosstalk.quantities["crosstalk_px"]
    if regions:
        names = list(regions)
        arrays["region_phase_response_rad"] = np.stack([regions[n].arrays["phase_response_rad"] for n in names])
        arrays["region_inverse_lut"] = np.stack([regions[n].arrays["inverse_lut"] for n in names])
        info["regions"] = names
        info["region_phase_range_rad"] = {n: regions[n].quantities["phase_range_rad"].as_json() for n in names}
    return Fit(name="slm", model=response.model, quantities=q, arrays=arrays,
               x=response.x, y=response.y, y_fit=response.y_fit, info=info)


# ============================================================================ amplitude transfer
def transfer_table(fit) -> tuple[np.ndarray, np.ndarray] | None:
    """The panel's amplitude transfer staircase from an SLM fit, scaled to +-1 at full amplitude.

    ``fit.arrays['amplitude_transfer_edges']`` (m,) and ``['amplitude_transfer']`` (m + 1,)
    hold the encoder's steps and the realised amplitude fraction of each; dividing by the half
    span leaves what varies from value to value (LUT rounding, response residuals) and keeps
    the overall scale (fringing loss) in the MVM gains.  Returns ``(edges, values)``, or None
    when the fit has no table (older files).
    """
    if fit is None or "amplitude_transfer" not in fit.arrays or "amplitude_transfer_edges" not in fit.arrays:
        return None
    v = np.asarray(fit.arrays["amplitude_transfer"], dtype=float)
    e = np.asarray(fit.arrays["amplitude_transfer_edges"], dtype=float)
    if (v.ndim != 1 or e.ndim != 1 or v.size != e.size + 1 or v.size < 2 or not np.all(np.isfinite(v))
            or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0)):
        raise ValueError(f"calibration '{fit.name}.amplitude_transfer' is not a valid staircase (m increasing "
                         f"edges, m + 1 finite values); re-run 'optwin calibrate --only slm'")
    half_span = 0.5 * (v[-1] - v[0])
    if not half_span > 0:
        raise ValueError(f"calibration '{fit.name}.amplitude_transfer' is not increasing; re-run the SLM calibration")
    return e, v / half_span


def realise_amplitudes(table, amps) -> np.ndarray:
    """Realised amplitude fractions for programmed ones (``table = (edges, values)``; clipped to +-1)."""
    a = np.clip(np.asarray(amps, dtype=float), -1.0, 1.0)
    if table is None:
        return a
    edges, values = table
    return values[np.searchsorted(edges, a, side="right")]
