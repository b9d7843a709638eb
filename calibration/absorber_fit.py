"""Saturable-absorber fits: pump and probe sweeps against the twin's absorber laws.

Data are powers in any consistent units (W, mW, camera counts, ...).  The twin's laws
(:mod:`twin.absorber`) work in normalised fields ``z = sqrt(P / i_sat)``; every fit
returns ``i_sat`` in the data's input units, so ``z = sqrt(P / i_sat)`` converts.

Models (for ``m`` in thin, twolevel, doppler, intensity transmission ``T_m(s; alpha0)`` at
saturation parameter ``s = P / i_sat``, equal to the twin's ``probe(sqrt(s))**2``):

* pump sweep:  ``P_out = T_bg * P_in * T_m(P_in / i_sat)``
* probe sweep: ``t_probe = T_bg,probe * T_m(P_pump / i_sat)`` (power transmission; with
  ``probe_quantity='amplitude'`` the square root).  For every twin model the weak
  counter-propagating probe sees exactly the pump's transmission.

``T_bg`` (``background_transmission``) is every pump-independent factor after the cell
(windows, filters, the detector's scale): a pump sweep cannot separate them.  A loss
*before* the cell rescales ``i_sat`` instead (the fitted ``i_sat`` is then referred to the
measured input power, which is what an operator sets).

Noise and model adequacy
------------------------
Without given standard errors the noise is estimated from the data alone: each point
is predicted from its two neighbours on each side by cubic Lagrange interpolation (in
``ln P`` when all inputs are > 0), the normalised prediction errors (pseudo-residuals)
give ``sigma_i^2 = a^2 + (b y_i)^2`` (absolute plus relative noise, fitted by
non-negative least squares).  A parametric model is *adequate* when both

1. its reduced chi-square with these sigmas is at most the 99.9 % point of
   ``F(n - k, nu)`` (``nu`` = number of pseudo-residuals - 2; ``chi2(n - k)/(n - k)`` when
   sigmas are given), and
2. the Wald-Wolfowitz runs test of its residual signs, ordered by input power, does not
   show too few runs (z > -3.09, one-sided p > 0.001), per sweep; skipped for a sweep
   whose mean squared normalised residual is below 0.25 (residuals far below the noise,
   e.g. exact data).

The estimated sigma never falls below 0.01 % of the signal.

Among the models the lowest BIC wins; if the winner is not adequate, the result is a
``TabulatedAbsorber`` built from the data (isotonic regression for monotonicity, then
averaged in up to 40 bins of ``ln P``, PCHIP between them) in the winner's normalisation.
"""
from __future__ import annotations

import math
from typing import Sequence

import lmfit
import numpy as np
from scipy import stats
from sklearn.isotonic import IsotonicRegression

from calibration.quantities import Fit, Quantity, param_stderr
from calibration.residual_tests import RUNS_Z, estimate_noise, runs_test_z
from twin.absorber import ABSORBER_MODELS, Absorber, TabulatedAbsorber, make_absorber

__all__ = ["MODELS", "CHI2_P", "transmission", "fit_pump_sweep",
           "fit_probe_sweep", "fit_absorber", "absorber_from_fit", "power_to_z", "derivative_mismatch"]

MODELS = tuple(ABSORBER_MODELS)          # ('thin', 'twolevel', 'doppler')
#: the chi^2 (or F) distribution point of the adequacy test
CHI2_P = 0.999


def transmission(model: str, s, alpha0: float):
    """Intensity transmission ``T_m(s)`` of twin model ``model`` at saturation parameter ``s``."""
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, None)
    return make_absorber(model, alpha0=alpha0, i_sat=1.0).probe(np.sqrt(s)) ** 2


def power_to_z(power, i_sat: float):
    """Normalised twin field ``z = sqrt(P / i_sat)`` (signed powers give signed z)."""
    p = np.asarray(power, dtype=np.float64)
    return np.sign(p) * np.sqrt(np.abs(p) / i_sat)


# ----------------------------------------------------------------------------- data sets
class _Data:
    """One sweep: kind 'pump' (y = C x T) or 'probe' (y = C T^e)."""

    def __init__(self, kind, x, y, sigma, exponent=1.0, label=""):
        self.kind, self.x, self.y, self.exponent, self.label = kind, x, y, exponent, label
        if sigma is None:
            self.sigma, self.noise_dof = estimate_noise(x, y)
            self.sigma_given = False
        else:
            self.sigma, self.noise_dof = sigma, None
            self.sigma_given = True

    def shape(self, model, alpha0, i_sat):
        t = transmission(model, self.x / i_sat, alpha0)
        return self.x * t if self.kind == "pump" else t ** self.exponent


def _check_sweep(x, y, names, what, sigma=None, allow_zero_x=True):
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.size != y.size:
        raise ValueError(f"{what}: {names[0]} has {x.size} values but {names[1]} has {y.size}; "
                         "give one output per input")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError(f"{what}: {names[0]}/{names[1]} contain NaN or inf; remove the bad rows")
    if np.any(x < 0) or (not allow_zero_x and np.any(x <= 0)):
        raise ValueError(f"{what}: {names[0]} must be powers >= 0")
    if np.unique(x).size < 8:
        raise ValueError(f"{what}: only {np.unique(x).size} distinct {names[0]} values; sweep at least 8 levels "
                         "from well below to well above saturation")
    if np.ptp(x) <= 0 or np.max(x) <= 0:
        raise ValueError(f"{what}: {names[0]} does not vary")
    order = np.argsort(x, kind="stable")
    s = None
    if sigma is not None:
        s = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (x.size,)).ravel().copy()
        if not np.all(np.isfinite(s)) or np.any(s <= 0):
            raise ValueError(f"{what}: standard errors must be finite and > 0")
        s = s[order]
    return x[order], y[order], s


# ----------------------------------------------------------------------------- fitting core
def _grid_start(model, datasets):
    """Best (alpha0, i_sat, scales) on a coarse grid; scales solved by weighted linear LSQ."""
    xs = np.concatenate([d.x[d.x > 0] for d in datasets])
    lo, hi = float(xs.min()), float(xs.max())
    i_grid = np.geomspace(lo / 3.0, hi * 3.0, 36)
    a_grid = np.concatenate([[0.05], np.geomspace(0.2, 60.0, 30)])
    best = (np.inf, None)
    for a0 in a_grid:
        chi = np.zeros(i_grid.size)
        scales = []
        for d in datasets:
            s = d.x[None, :] / i_grid[:, None]
            t = transmission(model, s, a0)
            f = d.x[None, :] * t if d.kind == "pump" else t ** d.exponent
            w = 1.0 / d.sigma
            fw, yw = f * w, d.y * w
            c = np.sum(fw * yw, 1) / np.maximum(np.sum(fw * fw, 1), 1e-300)
            c = np.maximum(c, 1e-300)
            chi += np.sum((yw - c[:, None] * fw) ** 2, 1)
            scales.append(c)
        j = int(np.argmin(chi))
        if chi[j] < best[0]:
            best = (float(chi[j]), (float(a0), float(i_grid[j]), [float(c[j]) for c in scales]))
    return best[1]


def _fit_model(model, datasets):
    a0, i0, c0 = _grid_start(model, datasets)
    params = lmfit.Parameters()
    params.add("alpha0", value=a0, min=0.0, max=500.0)
    params.add("i_sat", value=i0, min=i0 * 1e-6)
    for k, c in enumerate(c0):
        params.add(f"scale{k}", value=c, min=0.0)

    def resid(p):
        a, i = p["alpha0"].value, p["i_sat"].value
        out = []
        for k, d in enumerate(datasets):
            out.append((p[f"scale{k}"].value * d.shape(model, a, i) - d.y) / d.sigma)
        return np.concatenate(out)

    scale_covar = not all(d.sigma_given for d in datasets)
    res = lmfit.minimize(resid, params, method="leastsq", scale_covar=scale_covar)
    names = list(params)
    se = {n: param_stderr(res.params[n]) for n in names}
    if not all(np.isfinite(v) for v in se.values()):
        se = _bootstrap_se(model, datasets, res, names)
    r = resid(res.params)
    n_tot = r.size
    k = res.nvarys
    chi2 = float(r @ r)
    redchi = chi2 / max(n_tot - k, 1)
    # adequacy: chi-square / F test and runs test per data set
    if all(d.sigma_given for d in datasets):
        crit = stats.chi2.ppf(CHI2_P, max(n_tot - k, 1)) / max(n_tot - k, 1)
    else:
        nu = sum(d.noise_dof for d in datasets if d.noise_dof is not None)
        crit = stats.f.ppf(CHI2_P, max(n_tot - k, 1), max(nu, 1))
    runs, runs_fail = [], False
    off = 0
    for d in datasets:
        rd = r[off:off + d.x.size]
        runs.append(runs_test_z(rd))
        # the runs test only counts where residuals are at the noise level (not for exact data)
        runs_fail |= runs[-1] <= RUNS_Z and float(np.mean(rd ** 2)) >= 0.25
        off += d.x.size
    adequate = bool(redchi <= crit and not runs_fail)
    return {
        "model": model, "result": res, "params": {n: float(res.params[n].value) for n in names}, "stderr": se,
        "chi2": chi2, "redchi": redchi, "redchi_limit": float(crit), "runs_z": [float(z) for z in runs],
        "adequate": adequate, "n": n_tot, "k": k,
        "aic": float(n_tot * math.log(max(chi2, 1e-300) / n_tot) + 2 * k),
        "bic": float(n_tot * math.log(max(chi2, 1e-300) / n_tot) + k * math.log(n_tot)),
        "fits": [p_fit for p_fit in _curves(model, datasets, res.params)],
    }


def _curves(model, datasets, p):
    return [p[f"scale{k}"].value * d.shape(model, p["alpha0"].value, p["i_sat"].value)
            for k, d in enumerate(datasets)]


def _bootstrap_se(model, datasets, res, names, n_boot: int = 40):
    """Residual-bootstrap standard errors (fallback when lmfit gives none)."""
    rng = np.random.default_rng(2024)
    p0 = res.params
    curves = _curves(model, datasets, p0)
    draws = []
    for _ in range(n_boot):
        sets = []
        for d, c in zip(datasets, curves):
            nr = (d.y - c) / d.sigma
            yb = c + d.sigma * rng.choice(nr, nr.size, replace=True)
            db = _Data.__new__(_Data)
            db.__dict__.update(d.__dict__)
            db.y = yb
            sets.append(db)

        def resid(p, sets=sets):
            return np.concatenate([(p[f"scale{k}"].value * s.shape(model, p["alpha0"].value, p["i_sat"].value)
                                    - s.y) / s.sigma for k, s in enumerate(sets)])
        rb = lmfit.minimize(resid, p0.copy(), method="leastsq")
        draws.append([rb.params[n].value for n in names])
    sd = np.std(np.asarray(draws), axis=0, ddof=1)
    return {n: float(v) for n, v in zip(names, sd)}


def _select(datasets, models):
    table, fits = {}, {}
    for m in models:
        if m not in ABSORBER_MODELS:
            raise ValueError(f"unknown absorber model {m!r}: choose from {', '.join(MODELS)}")
        f = _fit_model(m, datasets)
        fits[m] = f
        table[m] = {"aic": f["aic"], "bic": f["bic"], "redchi": f["redchi"], "redchi_limit": f["redchi_limit"],
                    "runs_z": f["runs_z"], "adequate": f["adequate"],
                    "alpha0": [f["params"]["alpha0"], f["stderr"]["alpha0"]],
                    "i_sat": [f["params"]["i_sat"], f["stderr"]["i_sat"]]}
    best = min(fits, key=lambda m: fits[m]["bic"])
    return best, fits, table


def _smooth_monotone(x, y, n_bins_max: int = 40):
    """Isotonic (increasing) regression of y on x, averaged in bins of ln x; strictly increasing x."""
    iso = IsotonicRegression(increasing=True).fit(x, y).predict(x)
    u = np.log(x) if np.all(x > 0) else x
    n_bins = int(np.clip(x.size // 3, 5, n_bins_max))
    edges = np.quantile(u, np.linspace(0, 1, n_bins + 1))
    idx = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, n_bins - 1)
    xb, yb = [], []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            xb.append(x[sel].mean())
            yb.append(iso[sel].mean())
    xb, yb = np.array(xb), np.array(yb)
    keep = np.concatenate([[True], np.diff(xb) > 0])
    return xb[keep], np.maximum.accumulate(yb[keep])


def _tabulate(pump, probe, i_sat, c_pump, c_probe, probe_exponent):
    z_in_p, out_p = _smooth_monotone(pump.x, pump.y)
    z_in = np.sqrt(z_in_p / i_sat)
    z_out = np.sqrt(np.clip(out_p, 0.0, None) / (c_pump * i_sat))
    # strictly increasing output keeps the PCHIP law invertible
    z_out = z_out + 1e-12 * np.arange(z_out.size) * max(z_out.max(), 1e-12)
    kw = {}
    if probe is not None:
        pz, pt = _smooth_monotone(probe.x, probe.y)
        t_amp = np.clip(pt / c_probe, 0.0, None) ** (0.5 / probe_exponent)
        kw = {"probe_z": np.sqrt(pz / i_sat), "probe_t": t_amp}
    return TabulatedAbsorber(z_in, z_out, **kw)


def derivative_mismatch(absorber: Absorber, z_max: float, z_min: float = 0.0, probe_fn=None,
                        n: int = 401) -> dict:
    """Max and rms of ``g'(z)/t(z) - 1`` for z in [z_min, z_max].

    ``t`` is ``absorber.probe`` unless ``probe_fn(z)`` (a measured probe law) is given.
    Returns {'max_abs', 'rms', 'min', 'max', 'z_range'}.
    """
    z = np.linspace(z_min, z_max, n)
    t = absorber.probe(z) if probe_fn is None else probe_fn(z)
    r = absorber.derivative(z) / np.maximum(t, 1e-300) - 1.0
    return {"max_abs": float(np.max(np.abs(r))), "rms": float(np.sqrt(np.mean(r ** 2))),
            "min": float(r.min()), "max": float(r.max()), "z_range": [float(z_min), float(z_max)]}


# ----------------------------------------------------------------------------- public fits
def fit_pump_sweep(p_in, p_out, *, stderr=None, models: Sequence[str] = MODELS) -> Fit:
    """Fit every twin model to a pump sweep and pick one (BIC, tabulated fallback).

    Parameters
    ----------
    p_in, p_out : power into the cell and power detected after it (consistent units).
    stderr : optional standard errors of ``p_out`` (else estimated, see module docs).
    models : twin models to try.

    Returns
    -------
    Fit named 'absorber.pump': model ('thin' | 'twolevel' | 'doppler' | 'tabulated'),
    quantities ``alpha0``, ``i_sat`` (input units), ``background_transmission``; info with
    the AIC/BIC table and the adequacy tests; for 'tabulated' arrays ``tabulated_z_in``,
    ``tabulated_z_out``.
    """
    return _fit(p_in, p_out, None, None, pump_stderr=stderr, models=models, name="absorber.pump")


def fit_probe_sweep(pump, probe_transmission, *, stderr=None, probe_quantity: str = "power",
                    models: Sequence[str] = MODELS) -> Fit:
    """Fit every twin model's probe law to a probe sweep (weak probe transmission vs pump power).

    Parameters
    ----------
    pump, probe_transmission : array_like
        Pump power (any units) and the weak probe's transmission (any scale).
    stderr : array_like, optional
        Standard errors of ``probe_transmission`` (else estimated).
    probe_quantity : {'power', 'amplitude'}
        What ``probe_transmission`` measures.
    models : sequence of str
        Twin models to try.

    Returns
    -------
    Fit
        Named 'absorber.probe': quantities ``alpha0``, ``i_sat`` (pump units),
        ``background_transmission`` (the probe path's scale) and the same info as the pump fit;
        ``info['mismatch']`` is the chosen model's own ``g'/t - 1`` over the measured pump range.
    """
    return _fit(None, None, pump, probe_transmission, probe_stderr=stderr, probe_quantity=probe_quantity,
                models=models, name="absorber.probe")


def fit_absorber(pump_in, pump_out, probe_pump=None, probe_transmission=None, *, pump_stderr=None,
                 probe_stderr=None, probe_quantity: str = "power", shared: bool = True,
                 models: Sequence[str] = MODELS, operating_range=None) -> Fit:
    """Absorber calibration from a pump sweep and, optionally, a probe sweep.

    Parameters
    ----------
    pump_in, pump_out : pump power into the cell and out of it (consistent units).
    probe_pump, probe_transmission : pump power (same units as ``pump_in``) and the weak
        backward probe's transmission measured at it (scale free).
    probe_quantity : 'power' (probe power ratio, default) or 'amplitude'.
    shared : fit pump and probe jointly with shared ``alpha0`` and ``i_sat`` (separate
        scales); otherwise the pump alone picks the model and the probe is fitted separately.
    models : twin models to try.
    operating_range : (p_min, p_max) pump powers over which to report the mismatch (default
        the measured pump range).

    Returns
    -------
    Fit named 'absorber': ``model`` the chosen law, quantities ``alpha0``, ``i_sat`` (input
    units), ``background_transmission`` (+ ``probe_background_transmission``); info
    ``model``, ``parametric_model``, ``table`` (AIC/BIC, reduced chi^2 and runs test per
    model), ``mismatch`` (max/rms of g'/t - 1 over the operating range, t from the probe data
    when given), ``z_conversion``; arrays ``tabulated_*`` for the tabulated model.
    """
    return _fit(pump_in, pump_out, probe_pump, probe_transmission, pump_stderr=pump_stderr,
                probe_stderr=probe_stderr, probe_quantity=probe_quantity, shared=shared, models=models,
                operating_range=operating_range, name="absorber")


def _fit(pump_in, pump_out, probe_pump, probe_t, *, pump_stderr=None, probe_stderr=None,
         probe_quantity="power", shared=True, models=MODELS, operating_range=None, name="absorber") -> Fit:
    """The fits behind :func:`fit_absorber`, :func:`fit_pump_sweep` and :func:`fit_probe_sweep`."""
    models, exponent, pump, probe = _sweeps(pump_in, pump_out, probe_pump, probe_t, pump_stderr, probe_stderr,
                                            probe_quantity, models)
    warnings: list[str] = []
    primary = pump if pump is not None else probe
    if pump is not None and probe is not None and shared:
        sets = [pump, probe]
    else:
        sets = [primary]
    best, fits, table = _select(sets, models)
    probe_fit = None
    if pump is not None and probe is not None and not shared:
        pbest, pfits, ptable = _select([probe], models)
        probe_fit = (pbest, pfits[pbest], ptable)

    f = fits[best]
    p, se = f["params"], f["stderr"]
    rivals = sorted(m for m in fits if m != best and fits[m]["adequate"] and fits[m]["bic"] - f["bic"] < 6.0)
    if rivals:
        warnings.append(f"models {', '.join([best] + rivals)} fit about equally well (BIC within 6): the data do "
                        "not decide the law; extend the sweep to higher pump power or reduce the noise")
    i_sat, alpha0 = p["i_sat"], p["alpha0"]
    chosen = best if f["adequate"] else "tabulated"
    if chosen == "tabulated":
        warnings.append(f"no parametric model fits within the noise (best by BIC: {best}, reduced chi^2 "
                        f"{f['redchi']:.3g} > {f['redchi_limit']:.3g} or runs z {min(f['runs_z']):.2f} < {RUNS_Z}); "
                        "using the tabulated data; alpha0/i_sat are the best parametric model's")
    c_pump = p["scale0"]
    c_probe = None
    if probe is not None:
        if len(sets) == 2:
            c_probe = p["scale1"]
        elif pump is None:
            c_probe = p["scale0"]
        else:
            c_probe = probe_fit[1]["params"]["scale0"]
    absorber, arrays = _twin_absorber(chosen, best, alpha0, i_sat, pump, probe, c_pump, c_probe, exponent)
    mismatch = _mismatch(absorber, pump if pump is not None else probe, i_sat, operating_range, probe_fit,
                         probe is not None, chosen)
    quantities = _quantities(alpha0, i_sat, se, pump, c_pump, c_probe, len(sets) == 2, probe_fit)
    for q in quantities.values():
        if not np.isfinite(q.stderr):
            warnings.append("some standard errors could not be estimated")
            break
    info = {
        "model": chosen,
        "parametric_model": best,
        "ambiguous_with": rivals,
        "table": table,
        "criterion": "lowest BIC; adequate if reduced chi^2 <= 99.9% F(n-k, nu) point with the model-free noise "
                     "estimate and runs-test z > -3.09 (runs test skipped if reduced chi^2 < 0.25); else tabulated",
        "mismatch": mismatch,
        "z_conversion": "z = sqrt(P / i_sat), P and i_sat in the input's units",
        "shared_fit": len(sets) == 2,
        "noise_estimated": not all(d.sigma_given for d in sets),
        "warnings": warnings,
    }
    if probe_fit is not None:
        info["probe_model"] = probe_fit[0]
        info["probe_table"] = probe_fit[2]
    return Fit(name=name, model=chosen, quantities=quantities, arrays=arrays,
               x=primary.x, y=primary.y, y_fit=f["fits"][0], info=info)


def _sweeps(pump_in, pump_out, probe_pump, probe_t, pump_stderr, probe_stderr, probe_quantity, models):
    """Checked inputs of :func:`_fit`: (models, probe exponent, pump _Data or None, probe _Data or None)."""
    if probe_quantity not in ("power", "amplitude"):
        raise ValueError(f"probe_quantity must be 'power' or 'amplitude', got {probe_quantity!r}")
    models = tuple(models)
    if not models:
        raise ValueError("give at least one absorber model to fit")
    exponent = 1.0 if probe_quantity == "power" else 0.5
    pump = probe = None
    if pump_in is not None:
        x, y, s = _check_sweep(pump_in, pump_out, ("input", "output"), "pump sweep", pump_stderr)
        if np.all(y <= 0):
            raise ValueError("pump sweep: no transmitted power measured; check the detector")
        pump = _Data("pump", x, y, s, label="pump")
    elif pump_out is not None:
        raise ValueError("pump sweep: give both input and output powers")
    if (probe_pump is None) != (probe_t is None):
        raise ValueError("probe sweep: give both pump powers and probe transmissions, or neither")
    if probe_pump is not None:
        x, y, s = _check_sweep(probe_pump, probe_t, ("pump", "probe_transmission"), "probe sweep", probe_stderr)
        if np.all(y <= 0):
            raise ValueError("probe sweep: no probe transmission measured; check the probe detector")
        probe = _Data("probe", x, y, s, exponent=exponent, label="probe")
    if pump is None and probe is None:
        raise ValueError("give a pump sweep, a probe sweep, or both")
    return models, exponent, pump, probe


def _twin_absorber(chosen, best, alpha0, i_sat, pump, probe, c_pump, c_probe, exponent):
    """(absorber in the twin's normalised units, arrays for the Fit) of the chosen model."""
    if chosen != "tabulated":
        return make_absorber(best, alpha0=alpha0, i_sat=1.0), {}
    if pump is not None:
        absorber = _tabulate(pump, probe, i_sat, c_pump, c_probe, exponent)
        arrays = {"tabulated_z_in": absorber.z_in, "tabulated_z_out": absorber.z_out}
        if absorber.probe_z is not None:
            arrays["tabulated_probe_z"] = absorber.probe_z
            arrays["tabulated_probe_t"] = absorber.probe_t
        return absorber, arrays
    pz, pt = _smooth_monotone(probe.x, probe.y)
    t_amp = np.clip(pt / c_probe, 0.0, None) ** (0.5 / exponent)
    z = np.sqrt(pz / i_sat)
    absorber = TabulatedAbsorber(np.concatenate([[0.0], z]) if z[0] > 0 else z,
                                 np.concatenate([[0.0], z * t_amp]) if z[0] > 0 else z * t_amp,
                                 probe_z=z, probe_t=t_amp)
    return absorber, {"tabulated_probe_z": z, "tabulated_probe_t": t_amp}


def _mismatch(absorber, ref, i_sat, operating_range, probe_fit, have_probe: bool, chosen: str) -> dict:
    """``g'/t - 1`` over the operating range of pump fields (default: the range of sweep ``ref``)."""
    lo_p, hi_p = (float(ref.x.min()), float(ref.x.max())) if operating_range is None else \
        (float(operating_range[0]), float(operating_range[1]))
    if not (0 <= lo_p < hi_p) or not np.isfinite(hi_p):
        raise ValueError(f"operating_range must be (p_min, p_max) with 0 <= p_min < p_max, got {operating_range}")
    probe_fn, t_source = None, "model probe law"
    if probe_fit is not None:
        pm, pf = probe_fit[0], probe_fit[1]
        pa, pi = pf["params"]["alpha0"], pf["params"]["i_sat"]

        def probe_fn(z, pm=pm, pa=pa, pi=pi):
            return np.sqrt(transmission(pm, z ** 2 * i_sat / pi, pa))
        t_source = f"probe sweep ({pm} fit)"
    elif have_probe:
        t_source = "probe sweep (joint fit)" if chosen != "tabulated" else "probe sweep (tabulated)"
    mismatch = derivative_mismatch(absorber, math.sqrt(hi_p / i_sat), math.sqrt(lo_p / i_sat), probe_fn)
    mismatch["t_source"] = t_source
    mismatch["pump_range"] = [lo_p, hi_p]
    return mismatch


def _quantities(alpha0, i_sat, se, pump, c_pump, c_probe, shared_fit: bool, probe_fit) -> dict:
    """The Fit's quantities: alpha0, i_sat (input units) and the background transmission(s)."""
    quantities = {
        "alpha0": Quantity(alpha0, se["alpha0"], ""),
        "i_sat": Quantity(i_sat, se["i_sat"], "input units"),
    }
    if pump is not None:
        quantities["background_transmission"] = Quantity(c_pump, se["scale0"], "")
        if c_probe is not None:
            c_probe_se = se["scale1"] if shared_fit else probe_fit[1]["stderr"]["scale0"]
            quantities["probe_background_transmission"] = Quantity(c_probe, c_probe_se, "")
    else:
        quantities["background_transmission"] = Quantity(c_probe, se["scale0"], "")
    return quantities


def absorber_from_fit(fit: Fit) -> Absorber:
    """The twin absorber (normalised units, ``i_sat = 1``) that a fit describes.

    Convert powers with ``z = sqrt(P / fit.quantities['i_sat'].value)``.
    """
    model = fit.info.get("model", fit.model)
    if model == "tabulated":
        a = fit.arrays
        if "tabulated_z_in" in a:
            kw = {}
            if "tabulated_probe_z" in a:
                kw = {"probe_z": a["tabulated_probe_z"], "probe_t": a["tabulated_probe_t"]}
            return TabulatedAbsorber(a["tabulated_z_in"], a["tabulated_z_out"], **kw)
        z, t = a["tabulated_probe_z"], a["tabulated_probe_t"]
        return TabulatedAbsorber(z, z * t, probe_z=z, probe_t=t)
    return make_absorber(model, alpha0=fit.quantities["alpha0"].value, i_sat=1.0)
