"""Absorber calibration on a bench: pump and probe sweeps through the hidden layer, then the fits.

Measurement (:func:`measure_absorber`)
--------------------------------------
``slm1`` shows a uniform frame at the level of phase 0 (every element at full positive
amplitude, no field lost to pixel crosstalk at block edges: the strongest pump the layer
can give) and the DMD puts the same fill fraction ``f`` on every input block; ``f`` runs
over whole-pixel counts from one pixel to the full block (geometric at the weak end, linear
over the upper two thirds where saturation shapes the curve), in a fixed shuffled order so
that slow drifts do not correlate with the pump, with the pump off first and last.  Each
hidden neuron ``k`` then sees ``z1_k ~ f sum_j G_kj``: the sweep reaches as far above
saturation as the optics allow (``info['saturation_reached']``, a warning below 10 x i_sat).
Before the sweep the exposures are lengthened as far as the brightest state allows
(:func:`boost_exposures`; homodyne values scale exactly with the exposure and are divided
back).  Below one DMD pixel per block the first pass goes on with one pixel on fewer and
fewer input blocks (those nearest the middle of the layout, down to a single pixel; a wide
input layer's summed field saturates the cell already at one pixel on every input), each
such weak step at its own, longer exposure.  At every step, LO phases 0 and pi, ``repeats``
frame pairs:

* ``cam_z1`` (field before the cell) and ``cam_a1`` (after it): ``P_in = h_z1^2``,
  ``P_out = h_a1^2`` per neuron (the mean's square minus its variance, so noise does not bias
  weak points); at the pump-off steps also LO phases pi/2 and 3 pi/2: the quadrature of
  ``z1`` (stray light), because the cell saturates on ``|z1|^2`` while homodyne reads the
  real part;
* ``cam_back`` with the probe off (pump leak, coherent or not) and on: a weak probe
  (``probe_input`` at ``probe_amplitude`` on every output, ``slm2`` at full amplitude) comes
  back through layer 2 and the cell; ``h_on - h_off`` is proportional to its amplitude
  transmission ``t(z1_k)``.  Each neuron's probe arrives with its own unknown amplitude:
  the curves are put on one scale model-free (:func:`neuron_scales`).

Rows are recorded step by step (streams ``absorber.*``, meta ``step``, ``fill`` (mean over
the inputs), ``inputs_on``, ``t_s`` = bench clock, exposure factors); a resumed run reuses the recorded steps.

Analysis (:func:`reduce_absorber`)
----------------------------------
A Gaussian spot lights the cell, so the light that leaves it in the spot's mode has the
*spot-averaged* transmission of a point law ``tau`` (the twin's thin, twolevel or doppler)::

    T_spot(z) = 2 int_0^1 v tau(z v) dv        (z = peak field, v = local / peak field)

Every law and its spot-averaged variant is fitted to all neurons at once
(:func:`fit_law_jointly`: per-neuron output and input scales for the spot-to-spot
differences of the homodyne conversions, the stray quadrature in the saturation, alpha0
drifting linearly in time, weights from the measured variances), started from pooled fits
(:func:`analyse_absorber` after a model-free alignment) and a coarse grid; the lowest BIC
wins.  Standard errors: the largest of the covariance ones (measured variances), the
leave-one-neuron-out jackknife's and a delete-a-group jackknife over the sweep steps (the points
of one step share its frames and err together on every neuron; ``info['covariance_stderr']``,
``info['jackknife_stderr']``, ``info['step_jackknife_stderr']``).  A spot-averaged winner
cannot be written in closed form for the twin: the Fit's model is then ``'tabulated'`` (the
fitted law tabulated from ``z = 0`` to twice the measured range), ``info['parametric_model']``
names the law and ``info['spot_averaged']`` is True;
``alpha0`` and ``i_sat`` are that law's (``i_sat`` referred to the peak field).  No law
fitting at all falls back to the pooled fit's tabulated data.  The probe sweep is fitted
separately with the chosen law and gives the measured probe-vs-derivative mismatch.
:func:`analyse_absorber` alone (pooled data, spot variants included) serves measurement
files (``optwin calibrate absorber``).

Units: ``i_sat`` is in units of ``h_z1^2`` (the calibrated homodyne of ``cam_z1``), so the
twin field is ``z = h_z1 / sqrt(i_sat)``; ``background_transmission`` ``T_bg`` converts
``cam_a1``: ``a1 = h_a1 / sqrt(i_sat * T_bg)``.  :func:`scale_fit` writes these as the
contract's ``scale`` quantities ``z1_per_h`` and ``a1_per_h`` (the MVM calibration adds
``z2_per_h`` and ``delta1_per_h``).  ``alpha0`` is the value at the sweep's middle
(``info['alpha0_at_s']``, bench clock), ``alpha0_drift_per_hour`` its fitted drift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import lmfit
import numpy as np
from scipy import stats

from calibration.absorber_fit import (MODELS, derivative_mismatch, estimate_noise, fit_absorber,
                                      runs_test_z)
from calibration.procedures.exposure import kept_exposures
from calibration.quantities import Fit, Quantity
from twin.absorber import TabulatedAbsorber, make_absorber

__all__ = ["spot_amplitude_transmission", "fit_spot_model", "analyse_absorber", "scale_fit",
           "neuron_scales", "NeuronSweeps", "fit_law_jointly", "select_law_jointly", "AbsorberPlan",
           "absorber_plan", "boost_exposures", "law_margin", "full_pump_levels", "measure_absorber", "reduce_absorber",
           "StepStore", "repeated_powers", "homodyne_of", "SPOT_SUFFIX"]

SPOT_SUFFIX = "+spot"
_RUNS_Z = -3.09
_CHI2_P = 0.999

# Gauss-Legendre nodes on [0, 1] for the spot average
_GL_X, _GL_W = np.polynomial.legendre.leggauss(32)
_GL_V = 0.5 * (_GL_X + 1.0)
_GL_W = 0.5 * _GL_W


# ============================================================================ analysis
def spot_amplitude_transmission(model: str, s, alpha0: float) -> np.ndarray:
    """Amplitude transmission of a Gaussian spot's mode, ``2 int_0^1 v tau(sqrt(s) v) dv``.

    Parameters
    ----------
    model : twin law ('thin', 'twolevel', 'doppler'); ``tau`` is its probe (= pump)
        amplitude transmission at a local field.
    s : peak saturation parameter(s) ``z_peak^2 / i_sat`` (>= 0).
    alpha0 : resonant optical depth.
    """
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, None)
    r = np.sqrt(s)[..., None] * _GL_V
    tau = make_absorber(model, alpha0=float(alpha0), i_sat=1.0).probe(r)
    return 2.0 * (tau * _GL_V) @ _GL_W


def _shape(model: str, kind: str, x, alpha0: float, i_sat: float):
    """Pump: ``x * T(x/i_sat)``; probe: ``T(x/i_sat)`` with T the spot-averaged intensity transmission."""
    t = spot_amplitude_transmission(model, x / i_sat, alpha0) ** 2
    return x * t if kind == "pump" else t


@dataclass
class _Sweep:
    kind: str
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    noise_dof: int


def _sweep(kind, x, y) -> _Sweep:
    x = np.asarray(x, float).ravel()
    y = np.asarray(y, float).ravel()
    order = np.argsort(x, kind="stable")          # the order fit_absorber uses: same noise estimate
    x, y = x[order], y[order]
    sigma, dof = estimate_noise(x, y)
    return _Sweep(kind, x, y, sigma, dof)


def _stderr_of(res, name: str) -> float:
    """Standard error of parameter ``name`` of an lmfit result (nan when lmfit gave none)."""
    v = res.params[name].stderr
    return float(v) if v is not None and np.isfinite(v) else float("nan")


def _fit_summary(r, k: int, noise_dof: int):
    """(n, chi2, reduced chi2, reduced-chi2 limit) of normalised residuals ``r`` with ``k`` free
    parameters; the limit is the _CHI2_P point of F(n - k, noise_dof)."""
    n = r.size
    chi2 = float(r @ r)
    redchi = chi2 / max(n - k, 1)
    crit = float(stats.f.ppf(_CHI2_P, max(n - k, 1), max(noise_dof, 1)))
    return n, k, chi2, redchi, crit


def fit_spot_model(model: str, sweep: _Sweep, start: tuple[float, float] | None = None) -> dict:
    """Fit the spot-averaged law ``model`` to one sweep (weighted by the model-free noise estimate).

    Returns a dict like ``fit_absorber``'s table rows plus ``params``, ``stderr``, ``curve``.
    """
    x, y, sig = sweep.x, sweep.y, sweep.sigma
    pos = x[x > 0]
    lo, hi = float(pos.min()), float(pos.max())
    # coarse grid (scale solved linearly), around the point-law start when given
    if start is not None and np.isfinite(start[0]) and np.isfinite(start[1]) and start[1] > 0:
        a_grid = np.unique(np.concatenate([np.geomspace(max(start[0], 0.05) * 0.5, max(start[0], 0.05) * 2.0, 9),
                                           [max(start[0], 1e-3)]]))
        i_grid = np.geomspace(start[1] * 0.4, start[1] * 6.0, 17)
    else:
        a_grid = np.concatenate([[0.05], np.geomspace(0.2, 60.0, 20)])
        i_grid = np.geomspace(lo / 3.0, hi * 3.0, 24)
    w = 1.0 / sig
    best = (np.inf, None)
    for a0 in a_grid:
        f = np.stack([_shape(model, sweep.kind, x, a0, i) for i in i_grid])       # (n_i, n)
        fw, yw = f * w, y * w
        c = np.maximum(np.sum(fw * yw, 1) / np.maximum(np.sum(fw * fw, 1), 1e-300), 1e-300)
        chi = np.sum((yw - c[:, None] * fw) ** 2, 1)
        j = int(np.argmin(chi))
        if chi[j] < best[0]:
            best = (float(chi[j]), (float(a0), float(i_grid[j]), float(c[j])))
    a0, i0, c0 = best[1]
    params = lmfit.Parameters()
    params.add("alpha0", value=a0, min=0.0, max=500.0)
    params.add("i_sat", value=i0, min=i0 * 1e-6)
    params.add("scale", value=c0, min=0.0)

    def resid(p):
        return (p["scale"].value * _shape(model, sweep.kind, x, p["alpha0"].value, p["i_sat"].value) - y) / sig

    res = lmfit.minimize(resid, params, method="leastsq", scale_covar=True)
    r = resid(res.params)
    n, k, chi2, redchi, crit = _fit_summary(r, res.nvarys, sweep.noise_dof)
    runs = runs_test_z(r)
    runs_fail = runs <= _RUNS_Z and float(np.mean(r ** 2)) >= 0.25

    p = {name: float(res.params[name].value) for name in ("alpha0", "i_sat", "scale")}
    return {"model": model + SPOT_SUFFIX, "params": p, "stderr": {name: _stderr_of(res, name) for name in p},
            "chi2": chi2, "redchi": redchi, "redchi_limit": crit, "runs_z": [float(runs)],
            "adequate": bool(redchi <= crit and not runs_fail), "n": n, "k": k,
            "aic": float(n * math.log(max(chi2, 1e-300) / n) + 2 * k),
            "bic": float(n * math.log(max(chi2, 1e-300) / n) + k * math.log(n)),
            "curve": p["scale"] * _shape(model, sweep.kind, x, p["alpha0"], p["i_sat"])}


def _row(f: dict) -> dict:
    return {"aic": f["aic"], "bic": f["bic"], "redchi": f["redchi"], "redchi_limit": f["redchi_limit"],
            "runs_z": f["runs_z"], "adequate": f["adequate"],
            "alpha0": [f["params"]["alpha0"], f["stderr"]["alpha0"]],
            "i_sat": [f["params"]["i_sat"], f["stderr"]["i_sat"]]}


def analyse_absorber(pump_in, pump_out, probe_pump=None, probe_transmission=None, *,
                     spot_models: bool = True, models=MODELS) -> Fit:
    """Fit the absorber from a pump sweep (and optionally a probe sweep); see the module docs.

    Parameters
    ----------
    pump_in, pump_out : power into the cell (``h_z1^2``) and out of it (``h_a1^2``).
    probe_pump, probe_transmission : pump power (same units) and the weak probe's power
        transmission (any scale).
    spot_models : also try the spot-averaged variant of every law.
    models : point laws to try.

    Returns
    -------
    Fit named 'absorber' (as :func:`calibration.absorber_fit.fit_absorber` returns it, with
    the spot-averaged rows added to ``info['table']`` and ``info['spot_averaged']``).
    """
    have_probe = probe_pump is not None and probe_transmission is not None
    base = fit_absorber(pump_in, pump_out, probe_pump if have_probe else None,
                        probe_transmission if have_probe else None, shared=False, models=models)
    base.info["spot_averaged"] = False
    base.info["x_label"] = "P_in = h_z1^2"
    base.info["y_label"] = "P_out = h_a1^2"
    if not spot_models:
        return base
    pump = _sweep("pump", pump_in, pump_out)
    table = dict(base.info["table"])
    spot = {}
    for m in models:
        start = (table[m]["alpha0"][0], table[m]["i_sat"][0])
        spot[m] = fit_spot_model(m, pump, start)
        table[m + SPOT_SUFFIX] = _row(spot[m])
    base.info["table"] = table
    best = min(table, key=lambda name: table[name]["bic"])
    if not best.endswith(SPOT_SUFFIX):
        near = sorted(m for m in spot if table[m + SPOT_SUFFIX]["adequate"]
                      and table[m + SPOT_SUFFIX]["bic"] - table[best]["bic"] < 6.0)
        if near:
            base.info["ambiguous_with"] = sorted(set(base.info.get("ambiguous_with", []))
                                                 | {m + SPOT_SUFFIX for m in near})
            base.info["warnings"] = base.info.get("warnings", []) + [
                f"spot-averaged law(s) {', '.join(m + SPOT_SUFFIX for m in near)} fit about as well as {best} "
                "(BIC within 6)"]
        return base
    law = best[: -len(SPOT_SUFFIX)]
    f = spot[law]
    if not f["adequate"] and f["redchi"] > 2.0 * f["redchi_limit"]:
        base.info["warnings"] = base.info.get("warnings", []) + [
            f"the best law by BIC ({best}) does not fit within the noise either; kept the tabulated/point result"]
        return base
    out = _spot_result(base, law, f, pump, probe_pump if have_probe else None,
                       probe_transmission if have_probe else None)
    if not f["adequate"]:
        out.info["warnings"].append(
            f"{best} is the best law by far (BIC) but misses the noise criterion (reduced chi^2 {f['redchi']:.3g} > "
            f"{f['redchi_limit']:.3g}, runs z {f['runs_z'][0]:.2f}); its tabulation is used (drifts or "
            "spot-to-spot differences beyond the per-neuron scales may remain)")
    rivals = sorted(m for m in table if m != best and table[m]["adequate"] and table[m]["bic"] - f["bic"] < 6.0)
    out.info["ambiguous_with"] = rivals
    return out


def _spot_result(base: Fit, law: str, f: dict, pump: _Sweep, probe_pump, probe_t) -> Fit:
    alpha0, i_sat, c_pump = f["params"]["alpha0"], f["params"]["i_sat"], f["params"]["scale"]
    se = f["stderr"]
    z_top = math.sqrt(pump.x.max() / i_sat)
    z = 2.0 * z_top * np.linspace(0.0, 1.0, 301) ** 2
    t = spot_amplitude_transmission(law, z ** 2, alpha0)
    absorber = TabulatedAbsorber(z, z * t, probe_z=z, probe_t=t)
    quantities = {"alpha0": Quantity(alpha0, se["alpha0"], ""),
                  "i_sat": Quantity(i_sat, se["i_sat"], "input units"),
                  "background_transmission": Quantity(c_pump, se["scale"], "")}
    info = dict(base.info)
    warnings = [w for w in info.get("warnings", []) if "no parametric model fits" not in w]
    probe_fn, t_source = None, "model probe law (spot-averaged)"
    if probe_pump is not None:
        pr = _sweep("probe", probe_pump, probe_t)
        pf = fit_spot_model(law, pr, (alpha0, i_sat))
        quantities["probe_background_transmission"] = Quantity(pf["params"]["scale"], pf["stderr"]["scale"], "")
        pa, pi = pf["params"]["alpha0"], pf["params"]["i_sat"]

        def probe_fn(zz, pa=pa, pi=pi):
            return spot_amplitude_transmission(law, zz ** 2 * i_sat / pi, pa)
        t_source = f"probe sweep ({law}{SPOT_SUFFIX} fit)"
        info["probe_model"] = law + SPOT_SUFFIX
        info["probe_table"] = {law + SPOT_SUFFIX: _row(pf)}
        if not pf["adequate"]:
            warnings.append(f"the probe sweep does not follow the spot-averaged {law} law within the noise "
                            f"(reduced chi^2 {pf['redchi']:.3g}); the probe may be too strong or detuned")
    lo_p, hi_p = float(pump.x.min()), float(pump.x.max())
    mismatch = derivative_mismatch(absorber, math.sqrt(hi_p / i_sat), math.sqrt(max(lo_p, 0.0) / i_sat), probe_fn)
    mismatch["t_source"] = t_source
    mismatch["pump_range"] = [lo_p, hi_p]
    info.update({"model": "tabulated", "parametric_model": law, "spot_averaged": True, "mismatch": mismatch,
                 "warnings": warnings,
                 "criterion": info.get("criterion", "") + "; spot-averaged variants (+spot) compete on the same "
                              "BIC; a spot-averaged winner is tabulated for the twin"})
    for q in quantities.values():
        if not np.isfinite(q.stderr):
            warnings.append("some standard errors could not be estimated")
            break
    arrays = {"tabulated_z_in": absorber.z_in, "tabulated_z_out": absorber.z_out,
              "tabulated_probe_z": absorber.probe_z, "tabulated_probe_t": absorber.probe_t}
    return Fit(name="absorber", model="tabulated", quantities=quantities, arrays=arrays,
               x=pump.x, y=pump.y, y_fit=f["curve"], info=info)


def scale_fit(absorber: Fit, previous: Fit | None = None) -> Fit:
    """The contract's ``scale`` fit from an absorber fit: ``z1_per_h = 1/sqrt(i_sat)``,
    ``a1_per_h = 1/sqrt(i_sat * T_bg)`` (twin units per homodyne unit), standard errors
    propagated from the absorber fit's.  Homodyne values scale with the laser power, the
    cell's field with its square root: the conversion holds at the sweep's laser power
    (``info['z1_a1_at_s']``, bench clock; a drift of the laser by a fraction ``d`` since then
    changes ``z1_per_h`` by about ``-d/2``).

    ``previous`` : an existing scale fit whose other quantities (``z2_per_h``,
    ``delta1_per_h``) are kept.
    """
    i = absorber.quantities["i_sat"]
    tb = absorber.quantities["background_transmission"]
    if not (i.value > 0 and tb.value > 0):
        raise ValueError(f"absorber fit has i_sat={i.value}, background_transmission={tb.value}; "
                         "both must be > 0 to convert homodyne values to twin units")
    z1 = 1.0 / math.sqrt(i.value)
    a1 = 1.0 / math.sqrt(i.value * tb.value)
    z1_se = 0.5 * z1 * i.stderr / i.value
    a1_se = 0.5 * a1 * math.hypot(i.stderr / i.value, tb.stderr / tb.value)
    q = dict(previous.quantities) if previous is not None else {}
    q["z1_per_h"] = Quantity(z1, z1_se, "twin field per homodyne unit (cam_z1)")
    q["a1_per_h"] = Quantity(a1, a1_se, "twin field per homodyne unit (cam_a1)")
    info = dict(previous.info) if previous is not None else {}
    info["z1_a1_from"] = "absorber: z = h_z1/sqrt(i_sat), a1 = h_a1/sqrt(i_sat*T_bg)"
    # homodyne values (signal x LO) follow the laser power, the cell's field its square root:
    # the conversion holds at the laser power of the sweep
    info["z1_a1_at_s"] = absorber.info.get("alpha0_at_s")
    return Fit(name="scale", model="homodyne-to-twin", quantities=q, info=info)


def neuron_scales(x, y, sigma, usable, degree: int = 6, shift: bool = True, n_iter: int = 8):
    """Relative output (and input) scale of each neuron's curve, model-free.

    Every neuron samples the same smooth law ``y = r_k f(x / q_k)`` with its own output
    scale ``r_k`` and input scale ``q_k`` (spot-to-spot differences of the homodyne
    conversions of the two cameras).  ``ln y = poly(ln x - ln q_k) + ln r_k`` is fitted by
    weighted least squares (a polynomial of ``degree`` standing in for the unknown law;
    Gauss-Newton in ``ln q_k``), with ``sum ln r_k = sum ln q_k = 0``.  The input scales are
    separable only where the law's log-log slope varies; without ``shift`` they are 1.

    Parameters
    ----------
    x, y, sigma : (n_steps, n_neurons) inputs, outputs (> 0 where usable) and the outputs' errors.
    usable : (n_steps, n_neurons) bool, points to use.

    Returns
    -------
    (r, q) : (n_neurons,) output and input scales (1 where undetermined).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    sigma = np.asarray(sigma, float)
    n = x.shape[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.asarray(usable, bool) & (x > 0) & (y > 0) & (sigma > 0) & (y > 5.0 * sigma)
    if np.any(m.sum(axis=0) < 4):
        return np.ones(n), np.ones(n)
    lx = np.log(x[m])
    mu, sd = lx.mean(), max(lx.std(), 1e-12)
    k = np.nonzero(m)[1]
    ly = np.log(y[m])
    w = y[m] / sigma[m]                         # 1 / sigma of ln y
    deg = int(min(degree, max(1, np.unique(lx).size // 4)))
    onehot = (k[:, None] == np.arange(n)[None, :]).astype(float)
    lq = np.zeros(n)
    rho = np.zeros(n)
    for _ in range(n_iter if shift else 1):
        u = (lx - lq[k] - mu) / sd
        cols = np.stack([u ** d for d in range(1, deg + 1)], axis=1)
        design = np.concatenate([cols, onehot], axis=1)
        sol, *_ = np.linalg.lstsq(design * w[:, None], ly * w, rcond=None)
        beta, rho = sol[:deg], sol[deg:]
        if not shift:
            break
        slope = sum(d * beta[d - 1] * u ** (d - 1) for d in range(1, deg + 1)) / sd   # d ln y / d ln x
        resid = ly - design @ sol
        # d resid / d lq_k = + slope ; joint small step for (lq, rho) per neuron
        step = np.zeros(n)
        for j in range(n):
            sel = k == j
            a = np.stack([-slope[sel], np.ones(sel.sum())], axis=1) * w[sel, None]
            d, *_ = np.linalg.lstsq(a, resid[sel] * w[sel], rcond=None)
            step[j] = d[0]
        step -= step.mean()
        lq = lq + step
        if np.max(np.abs(step)) < 1e-7:
            break
    rho = rho - rho.mean()
    return np.exp(rho), np.exp(lq - lq.mean())


def _law_transmission(law: str, spot: bool, s, alpha0: float):
    """Intensity transmission of the law (spot-averaged or not) at saturation parameter ``s``."""
    if spot:
        return spot_amplitude_transmission(law, s, alpha0) ** 2
    return make_absorber(law, alpha0=alpha0, i_sat=1.0).probe(np.sqrt(np.clip(s, 0.0, None))) ** 2


@dataclass
class NeuronSweeps:
    """Pump-sweep points of every neuron, with measured variances and times.

    p_in, p_out : powers (``h^2`` minus the variance of the mean), one per usable point.
    var_in, var_out : their variances (from the repeats).
    neuron : neuron index of each point; t_h : time of each point (hours, 0 = mid-sweep).
    im2 : squared quadrature (imaginary part) of z1 at each point, same units as p_in: the cell
        saturates on ``|z1|^2 = p_in + im2``, the homodyne sees only the real part.
    step : sweep step of each point (the points of one step share its frames and settings);
        enables the step jackknife (:func:`_jackknife_steps`).
    """

    p_in: np.ndarray
    p_out: np.ndarray
    var_in: np.ndarray
    var_out: np.ndarray
    neuron: np.ndarray
    t_h: np.ndarray
    n_neurons: int
    im2: np.ndarray | None = None
    step: np.ndarray | None = None

    def subset(self, keep, neuron=None, n_neurons=None) -> "NeuronSweeps":
        """The points ``keep`` (bool mask), neuron indices renumbered by ``neuron`` when given."""
        def cut(a):
            return None if a is None else np.asarray(a)[keep]
        return NeuronSweeps(p_in=self.p_in[keep], p_out=self.p_out[keep], var_in=self.var_in[keep],
                            var_out=self.var_out[keep], neuron=self.neuron[keep] if neuron is None else neuron,
                            t_h=self.t_h[keep], n_neurons=self.n_neurons if n_neurons is None else n_neurons,
                            im2=cut(self.im2), step=cut(self.step))


def fit_law_jointly(law: str, spot: bool, data: NeuronSweeps, start: tuple, r0=None, q0=None) -> dict:
    """Fit one law to every neuron's sweep at once (per-neuron scales, drifting optical depth).

    ``P_out = r_k T_bg X T(X / i_sat; alpha0 + drift t)``, ``X = P_in / q_k``, with
    ``prod r_k = prod q_k = 1`` (the spot-to-spot differences of the two cameras' homodyne
    conversions), ``drift`` the change of alpha0 per hour (cell temperature, to first order),
    and ``s = (X + Im^2) / i_sat`` (the cell saturates on ``|z1|``, the homodyne reads the real
    part).  Weighted by the measured variances, the input's through the local slope; standard
    errors from those variances, scaled up by sqrt(reduced chi^2) when it exceeds 1.
    ``alpha0`` is the value at mid-sweep.

    Returns a dict with ``params``, ``stderr``, ``chi2``, ``redchi``, ``redchi_limit``,
    ``runs_z``, ``adequate``, ``aic``, ``bic``, ``r``, ``q``, ``x``/``y``/``y_fit`` (aligned).
    """
    n = data.n_neurons
    k_idx = data.neuron
    xin, yout = data.p_in, data.p_out
    im2 = np.zeros_like(xin) if data.im2 is None else np.asarray(data.im2, float)
    a0, i0 = float(start[0]), float(start[1])
    r0 = np.ones(n) if r0 is None else np.asarray(r0, float)
    q0 = np.ones(n) if q0 is None else np.asarray(q0, float)
    lr0, lq0 = np.log(r0) - np.log(r0).mean(), np.log(q0) - np.log(q0).mean()
    # linear start for T_bg
    X0 = xin / q0[k_idx]
    f0 = r0[k_idx] * X0 * _law_transmission(law, spot, X0 / i0, a0)
    w0 = 1.0 / np.maximum(np.sqrt(data.var_out), 1e-300)
    tb0 = float(np.sum(f0 * yout * w0 ** 2) / max(np.sum((f0 * w0) ** 2), 1e-300))
    params = lmfit.Parameters()
    params.add("alpha0", value=max(a0, 1e-3), min=0.0, max=500.0)
    params.add("i_sat", value=i0, min=i0 * 1e-3)
    params.add("tbg", value=max(tb0, 1e-12), min=0.0)
    params.add("drift", value=0.0)
    for j in range(n - 1):
        params.add(f"lr{j}", value=float(lr0[j]))
        params.add(f"lq{j}", value=float(lq0[j]))
    eps_a = 1e-4

    def scales(p):
        lr = np.array([p[f"lr{j}"].value for j in range(n - 1)])
        lq = np.array([p[f"lq{j}"].value for j in range(n - 1)])
        return np.exp(np.append(lr, -lr.sum())), np.exp(np.append(lq, -lq.sum()))

    def model(p, xx=None):
        r, q = scales(p)
        X = (xin if xx is None else xx) / q[k_idx]
        a = p["alpha0"].value
        s_ = (X + im2 / q[k_idx]) / p["i_sat"].value
        t = _law_transmission(law, spot, s_, a)
        drift = p["drift"].value
        if drift != 0.0:       # alpha0 + drift t: first order (the drift over a sweep is small)
            t = t * np.exp(dlnt * drift * data.t_h)
        return r[k_idx] * p["tbg"].value * X * t

    # d ln T / d alpha0 at the start (drift term); the drift over a sweep is a small correction
    s_start = (X0 + im2 / q0[k_idx]) / i0
    dlnt = (np.log(np.maximum(_law_transmission(law, spot, s_start, a0 + eps_a), 1e-300))
            - np.log(np.maximum(_law_transmission(law, spot, s_start, a0), 1e-300))) / eps_a
    eps = 1e-4
    slope = (model(params, xin * (1 + eps)) - model(params, xin)) / (eps * np.maximum(xin, 1e-300))
    sig = np.sqrt(data.var_out + slope ** 2 * data.var_in)
    sig = np.maximum(sig, 1e-4 * np.abs(yout) + 1e-300)

    def resid(p):
        return (model(p) - yout) / sig

    # the weights are measured variances: standard errors from them, inflated (never shrunk) by
    # the reduced chi^2 when the scatter exceeds them
    res = lmfit.minimize(resid, params, method="leastsq", scale_covar=False)
    inflate = math.sqrt(max(1.0, float(res.redchi)))

    def se(name):
        return _stderr_of(res, name) * inflate

    r_ = resid(res.params)
    nn, kk = r_.size, res.nvarys
    chi2 = float(r_ @ r_)
    dof = max(nn - kk, 1)
    crit = float(stats.chi2.ppf(_CHI2_P, dof) / dof)
    order = np.argsort(xin / scales(res.params)[1][k_idx], kind="stable")
    runs = runs_test_z(r_[order])
    adequate = bool(chi2 / dof <= crit and runs > _RUNS_Z)
    r, q = scales(res.params)
    X = xin / q[k_idx]
    return {"model": law + (SPOT_SUFFIX if spot else ""), "law": law, "spot": spot,
            "params": {"alpha0": float(res.params["alpha0"].value), "i_sat": float(res.params["i_sat"].value),
                       "tbg": float(res.params["tbg"].value), "drift": float(res.params["drift"].value)},
            "stderr": {"alpha0": se("alpha0"), "i_sat": se("i_sat"), "tbg": se("tbg"), "drift": se("drift")},
            "chi2": chi2, "redchi": chi2 / dof, "redchi_limit": crit, "runs_z": [float(runs)], "adequate": adequate,
            "n": nn, "k": kk, "aic": float(nn * math.log(max(chi2, 1e-300) / nn) + 2 * kk),
            "bic": float(nn * math.log(max(chi2, 1e-300) / nn) + kk * math.log(nn)),
            "r": r, "q": q, "x": X, "y": yout / r[k_idx], "y_fit": model(res.params) / r[k_idx]}


def _grid_start_joint(law: str, spot: bool, data: NeuronSweeps, r0, q0, n_a: int = 16, n_i: int = 16):
    """(alpha0, i_sat) of the lowest weighted chi^2 on a coarse grid (scales fixed, T_bg solved linearly)."""
    k = data.neuron
    X = data.p_in / np.asarray(q0, float)[k]
    f_r = np.asarray(r0, float)[k] * X
    w = 1.0 / np.maximum(np.sqrt(data.var_out), 1e-300)
    xmax = float(np.max(X))
    a_grid = np.geomspace(0.2, 60.0, n_a)
    i_grid = np.geomspace(xmax / 1000.0, xmax * 3.0, n_i)
    best = (np.inf, None)
    for a0 in a_grid:
        t = _law_transmission(law, spot, X[None, :] / i_grid[:, None], a0)        # (n_i, n)
        fw = f_r * t * w
        yw = data.p_out * w
        c = np.sum(fw * yw, 1) / np.maximum(np.sum(fw * fw, 1), 1e-300)
        chi = np.sum((yw - c[:, None] * fw) ** 2, 1)
        j = int(np.argmin(chi))
        if chi[j] < best[0]:
            best = (float(chi[j]), (float(a0), float(i_grid[j])))
    return best[1]


def _jackknife_neurons(law: str, spot: bool, data: NeuronSweeps, full: dict) -> dict:
    """Leave-one-neuron-out standard errors of alpha0, i_sat, T_bg and the drift.

    They cover what the per-point variances do not: neuron-to-neuron differences the model's
    per-neuron scales do not absorb.  Empty when there are fewer than 3 neurons.
    """
    n = data.n_neurons
    if n < 3:
        return {}
    keys = ("alpha0", "i_sat", "tbg", "drift")
    vals = []
    for drop in range(n):
        keep = data.neuron != drop
        remap = np.cumsum(np.arange(n) != drop) - 1
        sub = data.subset(keep, neuron=remap[data.neuron[keep]], n_neurons=n - 1)
        r0 = np.delete(full["r"], drop)
        q0 = np.delete(full["q"], drop)
        try:
            g = fit_law_jointly(law, spot, sub, (full["params"]["alpha0"], full["params"]["i_sat"]), r0, q0)
        except (ValueError, FloatingPointError):
            return {}
        vals.append([g["params"][k] for k in keys])
    v = np.asarray(vals)
    # the i_sat/T_bg normalisation (geometric means over the neurons used) shifts with the subset:
    # compare alpha0 and the drift directly, the scale-like parameters relative to their mean
    se = np.sqrt((n - 1) / n * np.sum((v - v.mean(axis=0)) ** 2, axis=0))
    return {k: float(x) for k, x in zip(keys, se)}


def _jackknife_steps(law: str, spot: bool, data: NeuronSweeps, full: dict, n_groups: int = 10) -> dict:
    """Delete-a-group jackknife over the sweep's steps: standard errors of alpha0, i_sat, T_bg, drift.

    The points of one step share its frames (laser-power jitter, drift, the pump the panels
    realised) and so err together on every neuron; the steps are the independent units.
    Steps are ranked by their mean aligned pump and dealt round-robin into ``n_groups``
    groups (each group spans the whole pump range); every group is left out once and the
    chosen law refitted from the full fit.  Empty without step labels or with fewer than 4
    groups.
    """
    if data.step is None:
        return {}
    steps = np.unique(data.step)
    g = int(min(n_groups, steps.size))
    if g < 4:
        return {}
    x = data.p_in / full["q"][data.neuron]
    level = np.array([np.mean(x[data.step == s]) for s in steps])
    group_of = dict(zip(steps[np.argsort(level, kind="stable")].tolist(), np.arange(steps.size) % g))
    group = np.array([group_of[s] for s in data.step.tolist()])
    keys = ("alpha0", "i_sat", "tbg", "drift")
    vals = []
    for drop in range(g):
        keep = group != drop
        if np.any(np.bincount(data.neuron[keep], minlength=data.n_neurons) < 4):
            return {}
        try:
            f = fit_law_jointly(law, spot, data.subset(keep), (full["params"]["alpha0"], full["params"]["i_sat"]),
                                full["r"], full["q"])
        except (ValueError, FloatingPointError):
            return {}
        vals.append([f["params"][k] for k in keys])
    v = np.asarray(vals)
    se = np.sqrt((g - 1) / g * np.sum((v - v.mean(axis=0)) ** 2, axis=0))
    return {k: float(x) for k, x in zip(keys, se)}


def _joint_row(f: dict) -> dict:
    return {"aic": f["aic"], "bic": f["bic"], "redchi": f["redchi"], "redchi_limit": f["redchi_limit"],
            "runs_z": f["runs_z"], "adequate": f["adequate"],
            "alpha0": [f["params"]["alpha0"], f["stderr"]["alpha0"]],
            "i_sat": [f["params"]["i_sat"], f["stderr"]["i_sat"]],
            "alpha0_drift_per_hour": [f["params"]["drift"], f["stderr"]["drift"]]}


def select_law_jointly(data: NeuronSweeps, pooled: Fit, probe_x=None, probe_y=None, *, models=MODELS,
                       spot_models: bool = True) -> Fit:
    """Fit every law (and its spot-averaged variant) with :func:`fit_law_jointly`, pick the lowest
    BIC, and assemble the 'absorber' Fit.

    ``pooled`` is :func:`analyse_absorber` of the same data pooled after a model-free alignment:
    its parameters start the joint fits, its probe fit is kept, and it is the result when no law
    fits (its tabulated fallback).
    """
    table_pooled = pooled.info.get("table", {})
    r0 = np.asarray(pooled.info.get("neuron_output_scales", np.ones(data.n_neurons)))
    q0 = np.asarray(pooled.info.get("neuron_input_scales", np.ones(data.n_neurons)))
    fits = {}
    for law in models:
        for spot in ((False, True) if spot_models else (False,)):
            name = law + (SPOT_SUFFIX if spot else "")
            row = table_pooled.get(name)
            start = (row["alpha0"][0], row["i_sat"][0]) if row else (pooled.quantities["alpha0"].value,
                                                                      pooled.quantities["i_sat"].value)
            # starts: the pooled fit and the best point of a coarse grid (the joint fit has many
            # parameters and stalls in side minima from a poor start)
            best_f = None
            starts = [start]
            g = _grid_start_joint(law, spot, data, r0, q0)
            if g is not None and not np.allclose(g, start, rtol=0.05):
                starts.append(g)
            for st in starts:
                try:
                    cand = fit_law_jointly(law, spot, data, st, r0, q0)
                except (ValueError, FloatingPointError):
                    continue
                if np.isfinite(cand["chi2"]) and (best_f is None or cand["chi2"] < best_f["chi2"]):
                    best_f = cand
            if best_f is not None:
                fits[name] = best_f
    if not fits:
        return pooled
    table = {name: _joint_row(f) for name, f in fits.items()}
    best = min(fits, key=lambda name: fits[name]["bic"])
    f = fits[best]
    info = dict(pooled.info)
    info["pooled_table"] = table_pooled
    info["table"] = table
    info["criterion"] = ("joint fit of every neuron (per-neuron output/input scales, alpha0 drifting linearly in "
                         "time), weighted by the measured variances; lowest BIC; adequate if reduced chi^2 <= "
                         "99.9% chi^2 point and runs z > -3.09; a spot-averaged winner is tabulated for the twin")
    warnings = [w for w in info.get("warnings", []) if "BIC within 6" not in w and "no parametric model" not in w
                and "does not fit within the noise" not in w and "spot-averaged law(s)" not in w]
    if not f["adequate"] and f["redchi"] > 2.0 * f["redchi_limit"]:
        info["warnings"] = warnings + [f"no law fits every neuron within the noise (best {best}, reduced chi^2 "
                                       f"{f['redchi']:.3g}); kept the pooled result ({pooled.model})"]
        pooled.info = info
        return pooled
    if not f["adequate"]:
        warnings.append(f"{best} is the best law (BIC) but misses the noise criterion (reduced chi^2 "
                        f"{f['redchi']:.3g} > {f['redchi_limit']:.3g}, runs z {f['runs_z'][0]:.2f})")
    rivals = sorted(m for m in fits if m != best and fits[m]["adequate"] and fits[m]["bic"] - f["bic"] < 6.0)
    if rivals:
        warnings.append(f"laws {', '.join([best] + rivals)} fit about equally well (BIC within 6): the data do not "
                        "decide the law; extend the sweep to higher pump power or average more")
    law, spot = f["law"], f["spot"]
    p, se = f["params"], dict(f["stderr"])
    info["covariance_stderr"] = dict(se)
    for label, jack in (("jackknife_stderr", _jackknife_neurons(law, spot, data, f)),
                        ("step_jackknife_stderr", _jackknife_steps(law, spot, data, f))):
        if jack:
            for key, v in jack.items():
                if np.isfinite(v) and not (v <= se.get(key, np.inf)):
                    se[key] = v
            info[label] = jack
    alpha0, i_sat = p["alpha0"], p["i_sat"]
    arrays = {}
    if spot:
        z_top = math.sqrt(float(np.max(f["x"])) / i_sat)
        z = 2.0 * z_top * np.linspace(0.0, 1.0, 301) ** 2
        t = spot_amplitude_transmission(law, z ** 2, alpha0)
        absorber = TabulatedAbsorber(z, z * t, probe_z=z, probe_t=t)
        arrays = {"tabulated_z_in": absorber.z_in, "tabulated_z_out": absorber.z_out,
                  "tabulated_probe_z": absorber.probe_z, "tabulated_probe_t": absorber.probe_t}
        model = "tabulated"
    else:
        absorber = make_absorber(law, alpha0=alpha0, i_sat=1.0)
        model = law
    quantities = {"alpha0": Quantity(alpha0, se["alpha0"], ""),
                  "i_sat": Quantity(i_sat, se["i_sat"], "input units"),
                  "background_transmission": Quantity(p["tbg"], se["tbg"], ""),
                  "alpha0_drift_per_hour": Quantity(p["drift"], se["drift"], "1/h")}
    # the probe sweep with the chosen law: separate fit (scale, alpha0, i_sat), gives the measured t(z)
    probe_fn, t_source = None, ("model probe law (spot-averaged)" if spot else "model probe law")
    if probe_x is not None and len(probe_x) >= 8:
        try:
            ps = _sweep("probe", probe_x, probe_y)
            if spot:
                pf = fit_spot_model(law, ps, (alpha0, i_sat))
            else:
                pf = _fit_point_probe(law, ps, (alpha0, i_sat))
            quantities["probe_background_transmission"] = Quantity(pf["params"]["scale"], pf["stderr"]["scale"], "")
            pa, pi = pf["params"]["alpha0"], pf["params"]["i_sat"]
            rel = max(pf["stderr"]["alpha0"] / max(pa, 1e-300), pf["stderr"]["i_sat"] / max(pi, 1e-300),
                      pf["stderr"]["scale"] / max(pf["params"]["scale"], 1e-300))
            if pf["adequate"] and np.isfinite(rel) and rel < 0.25:
                def probe_fn(zz, pa=pa, pi=pi):
                    return np.sqrt(_law_transmission(law, spot, zz ** 2 * i_sat / pi, pa))
                t_source = f"probe sweep ({best} fit)"
            else:
                warnings.append("the probe sweep is too noisy to define t(z) (relative uncertainty "
                                f"{rel:.2g}); the mismatch uses the fitted law's probe (raise probe_repeats)")
            info["probe_model"] = best
            info["probe_fit"] = {"alpha0": [pa, pf["stderr"]["alpha0"]], "i_sat": [pi, pf["stderr"]["i_sat"]],
                                 "redchi": pf["redchi"], "adequate": pf["adequate"]}
            if not pf["adequate"]:
                warnings.append(f"the probe sweep does not follow {best} within its noise (reduced chi^2 "
                                f"{pf['redchi']:.3g}); probe too strong, detuned, or too noisy")
        except ValueError as exc:
            warnings.append(f"probe sweep not fitted: {exc}")
    lo_p, hi_p = float(np.min(f["x"])), float(np.max(f["x"]))
    mismatch = derivative_mismatch(absorber, math.sqrt(hi_p / i_sat), math.sqrt(max(lo_p, 0.0) / i_sat), probe_fn)
    mismatch["t_source"] = t_source
    mismatch["pump_range"] = [lo_p, hi_p]
    for q in quantities.values():
        if not np.isfinite(q.stderr):
            warnings.append("some standard errors could not be estimated")
            break
    info.update({"model": model, "parametric_model": law, "spot_averaged": spot, "ambiguous_with": rivals,
                 "mismatch": mismatch, "warnings": warnings, "neuron_output_scales": f["r"].tolist(),
                 "neuron_input_scales": f["q"].tolist(),
                 "z_conversion": "z = sqrt(P / i_sat), P and i_sat in h_z1^2 units (geometric mean over neurons)"})
    order = np.argsort(f["x"], kind="stable")
    return Fit(name="absorber", model=model, quantities=quantities, arrays=arrays, x=f["x"][order],
               y=f["y"][order], y_fit=f["y_fit"][order], info=info)


def _fit_point_probe(law: str, sweep: _Sweep, start) -> dict:
    """Probe sweep ``c T(x / i_sat)`` with a point law (lmfit; same output layout as fit_spot_model)."""
    x, y, sig = sweep.x, sweep.y, sweep.sigma
    params = lmfit.Parameters()
    params.add("alpha0", value=max(start[0], 1e-3), min=0.0, max=500.0)
    params.add("i_sat", value=start[1], min=start[1] * 1e-3)
    t0 = _law_transmission(law, False, x / start[1], start[0])
    params.add("scale", value=float(np.sum(t0 * y / sig ** 2) / max(np.sum((t0 / sig) ** 2), 1e-300)), min=0.0)

    def resid(p):
        return (p["scale"].value * _law_transmission(law, False, x / p["i_sat"].value, p["alpha0"].value) - y) / sig

    res = lmfit.minimize(resid, params, method="leastsq", scale_covar=True)
    r = resid(res.params)
    n, k, chi2, redchi, crit = _fit_summary(r, res.nvarys, sweep.noise_dof)

    return {"params": {n_: float(res.params[n_].value) for n_ in ("alpha0", "i_sat", "scale")},
            "stderr": {n_: _stderr_of(res, n_) for n_ in ("alpha0", "i_sat", "scale")}, "redchi": redchi,
            "adequate": bool(redchi <= crit)}


# ============================================================================ measurement
class StepStore:
    """Per-step raw rows of a procedure, recorded as they are measured and reloaded on resume.

    Each step writes one row to every stream ``<prefix>.<part>`` (meta field ``step``).  Rows a
    previous, interrupted run committed are handed to the procedure through
    ``ctx.info['recorded']`` (stream name -> :class:`hwio.recording.RecordedStream`, loaded by
    the orchestrator before it reopens the raw file) and are not measured again.
    """

    def __init__(self, ctx, prefix: str, parts):
        self.ctx = ctx
        self.prefix = prefix
        self.parts = list(parts)
        self.loaded: dict[int, dict] = {}
        self._meta: dict[int, dict] = {}
        recorded = ctx.info.get("recorded", {}) if isinstance(ctx.info, dict) else {}
        for part in self.parts:
            rs = recorded.get(f"{prefix}.{part}")
            if rs is None or "step" not in rs.meta:
                continue
            for i, (data, step) in enumerate(zip(rs.frames, rs.meta["step"])):
                self.loaded.setdefault(int(step), {})[part] = np.asarray(data)
                self._meta.setdefault(int(step), {}).update({k: float(v[i]) for k, v in rs.meta.items()})
        self.n_reused = 0
        self.n_measured = 0

    def get(self, step: int):
        """The rows of ``step`` if every part was recorded, else None."""
        rows = self.loaded.get(int(step))
        if rows is not None and all(p in rows for p in self.parts):
            self.n_reused += 1
            return rows
        return None

    def meta(self, step: int, key: str):
        """A metadata value recorded with ``step`` (None when unknown)."""
        return self._meta.get(int(step), {}).get(key)

    def save(self, step: int, rows: dict, **meta) -> dict:
        self._meta.setdefault(int(step), {}).update({k: float(v) for k, v in meta.items()})
        self.loaded.setdefault(int(step), {}).update({p: np.asarray(rows[p]) for p in self.parts})
        for part in self.parts:
            self.ctx.record(f"{self.prefix}.{part}", np.asarray(rows[part], dtype=np.float64), step=int(step), **meta)
        rec = getattr(self.ctx, "recorder", None)
        if rec is not None:
            rec.flush()
        self.n_measured += 1
        return rows


def repeated_powers(ctx, cams, repeats: int, peaks: dict | None = None) -> dict:
    """Spot powers at LO phases 0 and pi, ``repeats`` times: cam -> (repeats, 2, n_spots).

    ``peaks`` (a dict) receives the largest raw pixel value (ADU) seen per camera, for
    saturation checks against ``ctx.saturation_adu``.
    """
    out = {c: [] for c in cams}
    for _ in range(int(repeats)):
        p = ctx.spot_powers(cams, (0.0, math.pi), 1)
        for c in cams:
            out[c].append(p[c])
            if peaks is not None:
                peaks[c] = max(peaks.get(c, 0.0), float(ctx.peak_adu.get(c, 0.0)))
    return {c: np.stack(v) for c, v in out.items()}


def saturated(ctx, peaks: dict) -> bool:
    """Whether any camera in ``peaks`` (cam -> largest pixel, ADU) reached its saturation level."""
    return any(float(v) >= ctx.saturation_adu(c) for c, v in peaks.items())


def homodyne_of(powers, lo_amplitude) -> np.ndarray:
    """Homodyne values ``(P0 - Ppi) / (4 lo)`` of powers (..., 2, n_spots)."""
    p = np.asarray(powers, float)
    return (p[..., 0, :] - p[..., 1, :]) / (4.0 * np.asarray(lo_amplitude, float))


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    from hwio.progress import progress
    return progress(iterable, total=total, desc=desc, unit="step")


@dataclass
class AbsorberPlan:
    """Settings of the absorber sweeps.

    counts : DMD pixels switched on per input block at each step (0 = pump off).
    n_active : active pixels per input block.
    repeats : frame pairs per step for cam_z1 and cam_a1.
    probe_repeats : frame pairs per step for cam_back, with the probe off and again with it on.
    probe_amplitude : probe_input amplitude fraction on every output (keep the probe weak).
    exposure_boost_max : longest exposure used for the sweeps, in operating exposures (see
        :func:`boost_exposures`; 1 keeps the operating exposures).
    max_passes, bic_margin : the sweep is repeated (all steps again, new rows) while the best
        law leads the next one by less than ``bic_margin`` in BIC, at most ``max_passes`` times.
    n_weak : weak-end steps of the first pass, at most: one DMD pixel on ``m`` input blocks,
        ``m`` geometric from 1 to n_in - 1 (meta ``inputs_on``; recorded as steps
        ``WEAK_STEP0 + j``).
    """

    counts: np.ndarray
    n_active: int
    repeats: int = 64
    probe_repeats: int = 32
    probe_amplitude: float = 0.15
    exposure_boost_max: float = 4.0
    max_passes: int = 3
    bic_margin: float = 10.0
    n_weak: int = 10

    @property
    def fills(self) -> np.ndarray:
        return np.asarray(self.counts, float) / self.n_active


def absorber_plan(bench, n_geometric: int = 10, n_linear: int = 24, repeats: int = 64, probe_repeats: int = 32,
                  probe_amplitude: float = 0.15) -> AbsorberPlan:
    """Pump steps: pump off, fills geometric from one pixel to full (weak end), linear over the
    upper two thirds (where saturation shapes the curve), pump off again."""
    lay = bench.layouts["input"]
    n_active = (lay.block_px[0] - 2 * lay.guard_px) * (lay.block_px[1] - 2 * lay.guard_px)
    geo = np.rint(np.geomspace(1, n_active, n_geometric))
    lin = np.rint(np.linspace(n_active / 3.0, n_active, n_linear))
    counts = np.unique(np.concatenate([geo, lin])).astype(int)
    # a fixed shuffle: slow drifts (laser power, cell temperature) do not correlate with the pump
    counts = np.random.default_rng(1288).permutation(counts)
    counts = np.concatenate([[0], counts, [0]])
    if not 0 < probe_amplitude <= 1:
        raise ValueError(f"probe_amplitude must be in (0, 1], got {probe_amplitude}")
    return AbsorberPlan(counts=counts, n_active=int(n_active), repeats=int(repeats),
                        probe_repeats=int(probe_repeats), probe_amplitude=float(probe_amplitude))


ABSORBER_PARTS = ("cam_z1", "cam_a1", "back_off", "back_on")
#: step index of the first weak-end step (after every pass's indices)
WEAK_STEP0 = 1_000_000


def weak_inputs(n_in: int, n_weak: int) -> list:
    """Numbers of input blocks (one DMD pixel each) of the weak-end steps: geometric, 1 to n_in - 1."""
    if n_in < 2 or n_weak < 1:
        return []
    return sorted({int(v) for v in np.rint(np.geomspace(1, n_in - 1, n_weak))})


def middle_inputs(n_in: int, m: int, fill: float) -> np.ndarray:
    """Fills (n_in,): ``fill`` on the ``m`` input blocks nearest the middle of the layout, 0 elsewhere."""
    order = np.argsort(np.abs(np.arange(n_in) - 0.5 * (n_in - 1)), kind="stable")
    out = np.zeros(n_in)
    out[order[:int(m)]] = fill
    return out


def boost_exposures(ctx, cams, probe_on, k_max: float = 4.0, fill_target: float = 0.7,
                    k_min: float = 1.0 / 1024.0, inputs=None) -> dict:
    """Set the exposures for the sweeps from the brightest state: as long as it allows, and
    shorter than the operating exposure when that would saturate.

    With the strongest pump (and the probe on for ``cam_back``) at LO phases 0 and pi, the
    brightest dark-subtracted pixel of each camera is scaled to ``fill_target`` of the room
    below saturation (ADC range above the dark level, or the camera fit's saturation
    capacity), between ``k_min`` and ``k_max`` times the operating exposure.  Shot noise falls
    as 1/sqrt(k); homodyne values grow by exactly ``k`` (photon counts; the background cancels
    in ``P0 - Ppi``), so dividing by the returned factor gives operating-exposure units.  A
    strong drive can saturate the spots at the operating exposure: the sweep then runs shorter
    (k < 1) rather than recording clipped pixels.  The range finding is
    :func:`calibration.procedures.exposure.find_exposure`, the one that chooses the operating
    exposures.

    ``inputs`` (n_in,) fills replace the strongest pump's (every input on) for a weaker state.

    Returns cam -> factor (exposure used / operating exposure).
    """
    from calibration.procedures.exposure import find_exposure, frame_peaks
    bench = ctx.bench
    n_in = bench.sizes.n_in
    ctx.show_inputs(np.ones(n_in) if inputs is None else np.asarray(inputs, float))
    ctx.show("probe_input", probe_on)
    out = {}
    for cam in cams:
        nominal = float(bench.cameras[cam].exposure_s)
        t, _, _ = find_exposure(ctx, cam, lambda cam=cam: frame_peaks(ctx, [cam], (0.0, math.pi))[cam],
                                fill=fill_target, t_min=nominal * min(k_min, 1.0), t_max=nominal * max(k_max, 1.0),
                                max_iter=8)
        out[cam] = t / nominal
    ctx.show("probe_input", ctx.zero_levels("probe_input"))
    return out


def full_pump_levels(ctx, slm_name: str = "slm1") -> np.ndarray:
    """Every pixel of ``slm_name`` at the level of phase 0: all elements at full positive amplitude.

    A uniform panel loses no field to the pixel crosstalk at block edges (a double-phase
    frame at full amplitude does, into its zero-field surround), so this is the strongest
    pump the layer can deliver.
    """
    level = int(ctx.encoder(slm_name).lut(np.array([0.0]))[0])
    return ctx.uniform_levels(slm_name, level)


def measure_absorber(ctx, plan: AbsorberPlan | None = None, *, progress: bool = False,
                     spot_models: bool = True) -> list:
    """Pump and probe sweeps on a bench, then the fits: returns ``[absorber, scale]`` fits.

    Needs the registration, readout and SLM fits in ``ctx``.  Raw spot powers (LO phases 0
    and pi, operating-exposure units after dividing by the meta ``k_*`` exposure factors) go
    to the streams ``absorber.<cam_z1|cam_a1|back_off|back_on>`` (one row (repeats, 2,
    n_spots) per step, meta ``step``, ``fill`` (mean over the inputs), ``inputs_on`` (input
    blocks lit), ``t_s`` (bench clock), ``k_z1``, ``k_a1``, ``k_back``) and
    ``absorber.z1_quadrature`` (LO phases pi/2, 3 pi/2 at the pump-off steps).  Steps found in ``ctx.info['recorded']`` (a resumed run) are not measured again.
    Camera exposures are restored afterwards.
    """
    for cam in ("cam_z1", "cam_a1", "cam_back"):
        ctx.need(f"readout.{cam}", "readout")
    bench = ctx.bench
    plan = plan or absorber_plan(bench)
    n_in, n_h, n_out = bench.sizes
    store = StepStore(ctx, "absorber", ABSORBER_PARTS)
    qstore = StepStore(ctx, "absorber", ("z1_quadrature",))
    probe_on = ctx.weight_levels("probe_input", np.full((1, n_out), plan.probe_amplitude), 1.0)
    probe_off = ctx.zero_levels("probe_input")
    cams = ("cam_z1", "cam_a1", "cam_back")
    nominal = {c: float(bench.cameras[c].exposure_s) for c in cams}
    gain = None
    rows, times, factors, counts, sat_flags = [], [], [], [], []
    n_steps = len(plan.counts)
    lo = {c: ctx.lo_amplitude(c) for c in cams}
    cam_of = {"cam_z1": "cam_z1", "cam_a1": "cam_a1", "back_off": "cam_back", "back_on": "cam_back"}
    fit = None
    weak = []                           # (step, m) of the weak-end steps, once they are added

    def measure(step, count, inputs, k):
        """One step: pump, probe off and on at the exposure factors ``k``; the stored rows."""
        fill = float(count) / plan.n_active
        ctx.show_inputs(np.full(n_in, fill) if inputs is None else middle_inputs(n_in, inputs, fill))
        ctx.show("probe_input", probe_off)
        t_before = float(bench.timeline.now())
        pump_peak, back_peak = {}, {}
        p = repeated_powers(ctx, ("cam_z1", "cam_a1"), plan.repeats, pump_peak)
        t_mid = 0.5 * (t_before + float(bench.timeline.now()))
        p_off = repeated_powers(ctx, ("cam_back",), plan.probe_repeats, back_peak)
        ctx.show("probe_input", probe_on)
        p_on = repeated_powers(ctx, ("cam_back",), plan.probe_repeats, back_peak)
        ctx.show("probe_input", probe_off)
        if count == 0:      # the quadrature of z1 (stray light): the cell saturates on |z1|
            pq = [ctx.spot_powers(["cam_z1"], (0.5 * math.pi, 1.5 * math.pi), 1)["cam_z1"]
                  for _ in range(plan.repeats)]
            qstore.save(step, {"z1_quadrature": np.stack(pq)}, k_z1=k["cam_z1"])
        m = n_in if inputs is None else int(inputs)
        return store.save(step, {"cam_z1": p["cam_z1"], "cam_a1": p["cam_a1"],
                                 "back_off": p_off["cam_back"], "back_on": p_on["cam_back"]},
                          fill=fill * m / n_in, inputs_on=m, t_s=t_mid, k_z1=k["cam_z1"],
                          k_a1=k["cam_a1"], k_back=k["cam_back"], sat_pump=float(saturated(ctx, pump_peak)),
                          sat_back=float(saturated(ctx, back_peak)))

    def keep(step, count, got):
        rows.append(got)
        sat_flags.append((bool(store.meta(step, "sat_pump")), bool(store.meta(step, "sat_back"))))
        counts.append(count)
        times.append(store.meta(step, "t_s"))
        factors.append({c: store.meta(step, key) or 1.0
                        for c, key in (("cam_z1", "k_z1"), ("cam_a1", "k_a1"), ("cam_back", "k_back"))})

    def measure_weak():
        """The weak-end steps, each at its own exposures (restored to the sweep's afterwards)."""
        with kept_exposures(ctx, cams):
            for step, m in _progress(weak, len(weak), "absorber (weak end)", progress):
                got = store.get(step)
                if got is None:
                    ctx.blank_all()
                    ctx.show("slm1", full_pump_levels(ctx))
                    ctx.show("slm2", ctx.weight_levels("slm2", np.ones((n_out, n_h)), 1.0))
                    for c in cams:
                        ctx.set_exposure(c, nominal[c])
                    k = boost_exposures(ctx, cams, probe_on, k_max=1024.0,
                                        inputs=middle_inputs(n_in, m, 1.0 / plan.n_active))
                    got = measure(step, 1, m, k)
                keep(step, 1, got)

    try:
        for n_pass in range(max(1, int(plan.max_passes))):
            steps = [(n_pass * n_steps + i, int(c)) for i, c in enumerate(plan.counts)]
            desc = "absorber" if n_pass == 0 else f"absorber (pass {n_pass + 1})"
            for step, count in _progress(steps, len(steps), desc, progress):
                got = store.get(step)
                if got is None:
                    if gain is None:
                        ctx.blank_all()
                        ctx.show("slm1", full_pump_levels(ctx))
                        ctx.show("slm2", ctx.weight_levels("slm2", np.ones((n_out, n_h)), 1.0))
                        gain = boost_exposures(ctx, cams, probe_on, plan.exposure_boost_max)
                    got = measure(step, count, None, gain)
                keep(step, count, got)
            if n_pass == 0 and n_in > 1:
                # the weak end below one pixel per block: fewer inputs lit (a wide layer's summed
                # field saturates the cell already at one pixel on every input)
                weak = [(WEAK_STEP0 + j, m) for j, m in enumerate(weak_inputs(n_in, plan.n_weak))]
                measure_weak()
            # homodyne values scale with the exposure: back to the operating exposure's units
            h = {part: [homodyne_of(r[part], lo[cam_of[part]]) / f[cam_of[part]] for r, f in zip(rows, factors)]
                 for part in ABSORBER_PARTS}
            quad = []
            for (step, count) in [(k * n_steps + i, int(c)) for k in range(n_pass + 1)
                                  for i, c in enumerate(plan.counts)]:
                got = qstore.loaded.get(step, {}).get("z1_quadrature")
                if count == 0 and got is not None:
                    quad.append(homodyne_of(got, lo["cam_z1"]) / (qstore.meta(step, "k_z1") or 1.0))
            h["z1_quadrature"] = quad
            all_plan = AbsorberPlan(counts=np.asarray(counts), n_active=plan.n_active, repeats=plan.repeats,
                                    probe_repeats=plan.probe_repeats, probe_amplitude=plan.probe_amplitude)
            with ctx.timed("absorber.fit"):
                fit = reduce_absorber(h, all_plan, None if any(t is None for t in times) else times,
                                      spot_models=spot_models, saturated=np.array(sat_flags, dtype=bool))
            fit.info["weak_end_inputs_on"] = [m for _, m in weak]
            fit.info["passes"] = n_pass + 1
            margin = law_margin(fit)
            fit.info["bic_margin"] = margin
            if not (margin < plan.bic_margin):
                break
            if n_pass + 1 < plan.max_passes:
                fit.info["warnings"].append(f"pass {n_pass + 1}: the best law leads by only {margin:.3g} in BIC; "
                                            "measured the sweep again")
    finally:
        for c in cams:
            if bench.cameras[c].exposure_s != nominal[c]:
                ctx.set_exposure(c, nominal[c])
        if gain is not None:
            ctx.blank_all()
    fit.info["raw_streams"] = [f"absorber.{p}" for p in ABSORBER_PARTS]
    fit.info["steps_reused"] = store.n_reused
    fit.info["steps_measured"] = store.n_measured
    fit.info["exposure_s"] = nominal
    fit.info["exposure_boost"] = {c: float(np.mean([f[c] for f in factors])) for c in cams}
    scale = scale_fit(fit, ctx.fits.get("scale"))
    ctx.add(fit, scale)
    return [fit, scale]


def law_margin(fit: Fit) -> float:
    """BIC lead of the chosen law over the best law of another family (inf when alone)."""
    table = fit.info.get("table", {})
    chosen = fit.info.get("parametric_model", fit.model) + (SPOT_SUFFIX if fit.info.get("spot_averaged") else "")
    if chosen not in table:
        return float("nan")
    others = [row["bic"] for name, row in table.items() if name != chosen]
    return float(min(others) - table[chosen]["bic"]) if others else float("inf")


def reduce_absorber(h: dict, plan: AbsorberPlan, times_s=None, *, spot_models: bool = True,
                    saturated=None) -> Fit:
    """Homodyne repeats of the sweeps -> pump/probe curves -> the absorber fit.

    Parameters
    ----------
    h : part -> list over steps of (repeats, n_neurons) homodyne values, parts
        ``cam_z1``, ``cam_a1``, ``back_off``, ``back_on``.
    plan : the plan the data were taken with (step counts).
    times_s : bench-clock time of every step (s); enables the alpha0 drift term.
    spot_models : also try the spot-averaged laws.
    saturated : optional (n_steps, 2) booleans: a camera saturated during the step's pump
        readout (cam_z1/cam_a1; the step leaves the pump and probe fits) or its probe readout
        (cam_back; the step leaves the probe fit).  Clipped pixels bend the curves exactly
        where saturation of the cell shapes them.

    The laws are compared by :func:`select_law_jointly` (every neuron's own scales, alpha0
    drifting in time); the pooled, aligned data (:func:`neuron_scales`,
    :func:`analyse_absorber`) start those fits and give the probe fit and the fallback.
    """
    counts = np.asarray(plan.counts)

    def mean_var(part):
        arr = [np.asarray(a, float) for a in h[part]]
        m = np.stack([a.mean(axis=0) for a in arr])
        v = np.stack([a.var(axis=0, ddof=1) / a.shape[0] if a.shape[0] > 1 else np.zeros(a.shape[1])
                      for a in arr])
        return m, v

    mz, vz = mean_var("cam_z1")
    ma, va = mean_var("cam_a1")
    mb_off, vb_off = mean_var("back_off")
    mb_on, vb_on = mean_var("back_on")
    p_in_raw = mz ** 2 - vz
    p_out_raw = ma ** 2 - va
    # the quadrature of z1 (stray light): the cell saturates on |z1|^2 = Re^2 + Im^2
    im2 = np.zeros(mz.shape[1])
    if h.get("z1_quadrature"):
        qa = np.concatenate([np.asarray(a, float) for a in h["z1_quadrature"]])
        im2 = np.maximum(qa.mean(axis=0) ** 2 - qa.var(axis=0, ddof=1) / qa.shape[0], 0.0)
    on = counts > 0
    sat = np.zeros((counts.size, 2), dtype=bool) if saturated is None else np.asarray(saturated, dtype=bool)
    if sat.shape != (counts.size, 2):
        raise ValueError(f"saturated must have shape ({counts.size}, 2), got {sat.shape}")
    warnings = []
    if sat[on, 0].any():
        warnings.append(f"{int(sat[on, 0].sum())} of {int(on.sum())} pump steps saturated cam_z1 or cam_a1 and "
                        "were left out (clipped even at the sweep's shortest exposure); lower the laser power to "
                        "keep the strongest pumps")
    if sat[on, 1].any():
        warnings.append(f"{int(sat[on, 1].sum())} of {int(on.sum())} probe steps saturated cam_back and were "
                        "left out of the probe fit")
    usable = on[:, None] & ~sat[:, :1] & (np.abs(mz) > 5.0 * np.sqrt(vz)) & (p_in_raw > 0)
    if usable.sum() < 8:
        raise ValueError(f"only {int(usable.sum())} pump points rose above the noise; check that slm1 and the "
                         "input DMD reach the hidden layer (registration/readout) and that the laser is on")
    # spot-to-spot differences of the homodyne conversions: per-neuron scales, model-free
    r_out, q_in = neuron_scales(p_in_raw, p_out_raw, 2.0 * np.abs(ma) * np.sqrt(va) + va, usable)
    p_out = p_out_raw / r_out
    p_in = p_in_raw / q_in
    x, y = p_in[usable], p_out[usable]
    # probe: leak subtracted; per neuron its own (unknown) probe amplitude -> model-free scales
    pr = mb_on - mb_off
    pr_se = np.sqrt(vb_on + vb_off)
    off = ~on
    probe_x = probe_y = None
    r_probe = None
    sign = np.sign(pr[usable.any(axis=1)].sum(axis=0))
    sign[sign == 0] = 1.0
    prs = pr * sign
    good = usable & ~sat[:, 1:] & (prs > 3.0 * pr_se)
    if np.all(good.sum(axis=0) >= 3):
        r_probe, _ = neuron_scales(p_in, prs, pr_se, good, shift=False)
        t_amp = prs / r_probe
        t_amp = t_amp / np.median(t_amp[good])
        keep = usable & ~sat[:, 1:] & np.isfinite(t_amp)
        probe_x, probe_y = p_in[keep], np.sign(t_amp[keep]) * t_amp[keep] ** 2
    else:
        warnings.append("the probe signal is below 3 standard errors at most pump levels for some neuron; the "
                        "probe sweep was not fitted (raise probe_amplitude or probe_repeats)")
    ref_snr = (np.abs(pr[off]).mean(axis=0) / np.maximum(np.sqrt((pr_se[off] ** 2).mean(axis=0)), 1e-300)
               if off.any() else np.full(pr.shape[1], np.nan))
    pooled = analyse_absorber(x, y, probe_x, probe_y, spot_models=spot_models)
    pooled.info["neuron_output_scales"] = r_out.tolist()
    pooled.info["neuron_input_scales"] = q_in.tolist()
    # every neuron jointly, with the measured variances and the time of each point
    if times_s is None:
        t_h = np.zeros(counts.size)
    else:
        t = np.asarray(times_s, float)
        t_h = (t - 0.5 * (t[usable.any(axis=1)].min() + t[usable.any(axis=1)].max())) / 3600.0
    step_idx, neuron_idx = np.nonzero(usable)
    data = NeuronSweeps(p_in=p_in_raw[usable], p_out=p_out_raw[usable],
                        var_in=(4.0 * mz ** 2 * vz + 2.0 * vz ** 2)[usable],
                        var_out=(4.0 * ma ** 2 * va + 2.0 * va ** 2)[usable],
                        neuron=neuron_idx, t_h=t_h[step_idx], n_neurons=mz.shape[1], im2=im2[neuron_idx],
                        step=step_idx)
    fit = select_law_jointly(data, pooled, probe_x, probe_y, spot_models=spot_models)
    i_sat = fit.quantities["i_sat"].value
    s_max = float(np.max(fit.x) / i_sat) if fit.x is not None else float(x.max() / i_sat)
    fit.info["saturation_reached"] = s_max
    fit.info["weakest_pump_s"] = float(np.min(fit.x) / i_sat) if fit.x is not None else float(x.min() / i_sat)
    fit.info["pump_points"] = int(x.size)
    fit.info["probe_points"] = 0 if probe_x is None else int(probe_x.size)
    fit.info["probe_amplitude"] = plan.probe_amplitude
    fit.info["probe_pump_off_snr"] = ref_snr.tolist()
    fit.info["neuron_probe_scales"] = None if r_probe is None else r_probe.tolist()
    fit.info["z1_quadrature_power"] = im2.tolist()
    fit.info["x_label"] = "P_in = h_z1^2 / q_k (aligned)"
    fit.info["y_label"] = "P_out = h_a1^2 / r_k (aligned)"
    if times_s is not None:
        fit.info["sweep_time_s"] = [float(np.min(times_s)), float(np.max(times_s))]
        fit.info["alpha0_at_s"] = 0.5 * float(np.asarray(times_s)[usable.any(axis=1)].min()
                                              + np.asarray(times_s)[usable.any(axis=1)].max())
    if s_max < 10:
        warnings.append(f"the pump reached only {s_max:.3g} x i_sat: the law and alpha0 are weakly determined "
                        "(alpha0 trades off against the background transmission); raise the pump power "
                        "(laser, layer-1 gain) to reach >= 30 x i_sat")
    fit.info["warnings"] = fit.info.get("warnings", []) + warnings
    return fit
