"""Absorber fits of pooled sweeps, spot-averaged laws, and the homodyne-to-twin conversion.

A Gaussian spot lights the cell, so the light that leaves it in the spot's mode has the
*spot-averaged* transmission of a point law ``tau`` (the twin's thin, twolevel or doppler)::

    T_spot(z) = 2 int_0^1 v tau(z v) dv        (z = peak field, v = local / peak field)

(:func:`twin.spot.spot_average`).  :func:`analyse_absorber` fits every point law
(:func:`calibration.absorber_fit.fit_absorber`) and its spot-averaged variant
(:func:`fit_spot_model`, model name + :data:`SPOT_SUFFIX`) to one pooled pump sweep and keeps
the lowest BIC; a spot-averaged winner cannot be written in closed form for the twin, so the
Fit's model is then ``'tabulated'`` (the fitted law tabulated from ``z = 0`` to twice the
measured range), ``info['parametric_model']`` names the law and ``info['spot_averaged']`` is
True.  It serves measurement files (``optwin calibrate absorber``) and starts the joint fit of
every neuron (:mod:`calibration.absorber_joint_fit`).

:func:`neuron_scales` puts every neuron's curve on one scale model-free; :func:`scale_fit`
writes ``z1_per_h = 1/sqrt(i_sat)`` and ``a1_per_h = 1/sqrt(i_sat T_bg)``.

Inputs are plain arrays: powers in ``h_z1^2``/``h_a1^2`` units (squared homodyne values) or
any consistent units; ``i_sat`` is returned in the input's units.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import lmfit
import numpy as np
from scipy import stats

from calibration.absorber_fit import CHI2_P, MODELS, derivative_mismatch, fit_absorber
from calibration.residual_tests import RUNS_Z, estimate_noise, runs_test_z
from calibration.quantities import Fit, Quantity, param_stderr
from twin.absorber import TabulatedAbsorber, make_absorber
from twin.spot import spot_average

__all__ = ["SPOT_SUFFIX", "spot_amplitude_transmission", "law_transmission", "Sweep", "sweep_of", "fit_summary",
           "fit_spot_model", "fit_point_probe", "table_row", "spot_law_table", "analyse_absorber", "scale_fit", "neuron_scales"]

SPOT_SUFFIX = "+spot"


def spot_amplitude_transmission(model: str, s, alpha0: float) -> np.ndarray:
    """Amplitude transmission of a Gaussian spot's mode, ``2 int_0^1 v tau(sqrt(s) v) dv``.

    Parameters
    ----------
    model : str
        Twin law ('thin', 'twolevel', 'doppler'); ``tau`` is its probe (= pump) amplitude
        transmission at a local field.
    s : array_like
        Peak saturation parameter(s) ``z_peak^2 / i_sat`` (dimensionless, clipped at 0).
    alpha0 : float
        Resonant optical depth (dimensionless).

    Returns
    -------
    ndarray
        Spot-averaged amplitude transmission (dimensionless), shape of ``s``.
    """
    s = np.clip(np.asarray(s, dtype=np.float64), 0.0, None)
    law = make_absorber(model, alpha0=float(alpha0), i_sat=1.0)
    return spot_average(law.probe, np.sqrt(s))


def _shape(model: str, kind: str, x, alpha0: float, i_sat: float):
    """Pump: ``x * T(x/i_sat)``; probe: ``T(x/i_sat)`` with T the spot-averaged intensity transmission."""
    t = spot_amplitude_transmission(model, x / i_sat, alpha0) ** 2
    return x * t if kind == "pump" else t


@dataclass
class Sweep:
    """One sweep sorted by input: ``kind`` 'pump' (y = c x T) or 'probe' (y = c T), inputs ``x``,
    outputs ``y``, model-free noise ``sigma`` (output units) and its degrees of freedom."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    sigma: np.ndarray
    noise_dof: int


def sweep_of(kind: str, x, y) -> Sweep:
    """A :class:`Sweep` of inputs ``x`` and outputs ``y`` (any consistent units), noise estimated
    by :func:`calibration.residual_tests.estimate_noise`."""
    x = np.asarray(x, float).ravel()
    y = np.asarray(y, float).ravel()
    order = np.argsort(x, kind="stable")          # the order fit_absorber uses: same noise estimate
    x, y = x[order], y[order]
    sigma, dof = estimate_noise(x, y)
    return Sweep(kind, x, y, sigma, dof)


def fit_summary(r, k: int, noise_dof: int):
    """(n, chi2, reduced chi2, reduced-chi2 limit) of normalised residuals ``r`` with ``k`` free
    parameters; the limit is the CHI2_P point of F(n - k, noise_dof)."""
    n = r.size
    chi2 = float(r @ r)
    redchi = chi2 / max(n - k, 1)
    crit = float(stats.f.ppf(CHI2_P, max(n - k, 1), max(noise_dof, 1)))
    return n, k, chi2, redchi, crit


def fit_spot_model(model: str, sweep: Sweep, start: tuple[float, float] | None = None) -> dict:
    """Fit the spot-averaged law ``model`` to one sweep (weighted by the model-free noise estimate).

    Parameters
    ----------
    model : str
        Point law ('thin', 'twolevel', 'doppler') whose spot average is fitted.
    sweep : Sweep
        Pump sweep (``y = scale x T_spot(x / i_sat)``) or probe sweep (``y = scale T_spot``).
    start : (float, float), optional
        ``(alpha0, i_sat)`` to centre the starting grid on (e.g. the point law's fit).

    Returns
    -------
    dict
        ``params`` and ``stderr`` of ``alpha0`` (dimensionless), ``i_sat`` (input units) and
        ``scale`` (output per input units), ``chi2``, ``redchi``, ``redchi_limit``, ``runs_z``,
        ``adequate``, ``n``, ``k``, ``aic``, ``bic``, and the fitted ``curve`` (output units).
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
    n, k, chi2, redchi, crit = fit_summary(r, res.nvarys, sweep.noise_dof)
    runs = runs_test_z(r)
    runs_fail = runs <= RUNS_Z and float(np.mean(r ** 2)) >= 0.25

    p = {name: float(res.params[name].value) for name in ("alpha0", "i_sat", "scale")}
    return {"model": model + SPOT_SUFFIX, "params": p, "stderr": {name: param_stderr(res.params[name]) for name in p},
            "chi2": chi2, "redchi": redchi, "redchi_limit": crit, "runs_z": [float(runs)],
            "adequate": bool(redchi <= crit and not runs_fail), "n": n, "k": k,
            "aic": float(n * math.log(max(chi2, 1e-300) / n) + 2 * k),
            "bic": float(n * math.log(max(chi2, 1e-300) / n) + k * math.log(n)),
            "curve": p["scale"] * _shape(model, sweep.kind, x, p["alpha0"], p["i_sat"])}


def table_row(f: dict) -> dict:
    """The model-comparison table row (``info['table']``) of a fit dict."""
    return {"aic": f["aic"], "bic": f["bic"], "redchi": f["redchi"], "redchi_limit": f["redchi_limit"],
            "runs_z": f["runs_z"], "adequate": f["adequate"],
            "alpha0": [f["params"]["alpha0"], f["stderr"]["alpha0"]],
            "i_sat": [f["params"]["i_sat"], f["stderr"]["i_sat"]]}


def analyse_absorber(pump_in, pump_out, probe_pump=None, probe_transmission=None, *,
                     spot_models: bool = True, models=MODELS) -> Fit:
    """Fit the absorber from a pump sweep (and optionally a probe sweep); see the module docs.

    Parameters
    ----------
    pump_in, pump_out : array_like
        Power into the cell (``h_z1^2`` units) and out of it (``h_a1^2`` units), one per point.
    probe_pump, probe_transmission : array_like, optional
        Pump power (``h_z1^2`` units) and the weak probe's power transmission (any scale).
    spot_models : bool
        Also try the spot-averaged variant of every law.
    models : sequence of str
        Point laws to try.

    Returns
    -------
    Fit
        Named 'absorber' (as :func:`calibration.absorber_fit.fit_absorber` returns it, with the
        spot-averaged rows added to ``info['table']`` and ``info['spot_averaged']``); quantities
        ``alpha0`` (dimensionless), ``i_sat`` (``h_z1^2`` units), ``background_transmission``.
    """
    have_probe = probe_pump is not None and probe_transmission is not None
    base = fit_absorber(pump_in, pump_out, probe_pump if have_probe else None,
                        probe_transmission if have_probe else None, shared=False, models=models)
    base.info["spot_averaged"] = False
    base.info["x_label"] = "P_in = h_z1^2"
    base.info["y_label"] = "P_out = h_a1^2"
    if not spot_models:
        return base
    pump = sweep_of("pump", pump_in, pump_out)
    table = dict(base.info["table"])
    spot = {}
    for m in models:
        start = (table[m]["alpha0"][0], table[m]["i_sat"][0])
        spot[m] = fit_spot_model(m, pump, start)
        table[m + SPOT_SUFFIX] = table_row(spot[m])
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


def spot_law_table(law: str, alpha0: float, z_top: float) -> TabulatedAbsorber:
    """The spot-averaged ``law`` tabulated for the twin from ``z = 0`` to ``2 z_top``.

    Parameters
    ----------
    law : str
        Point law ('thin', 'twolevel', 'doppler').
    alpha0 : float
        Resonant optical depth (dimensionless).
    z_top : float
        Largest measured peak field (normalised twin field units, ``sqrt(P / i_sat)``).

    Returns
    -------
    TabulatedAbsorber
        301 points, denser at the weak end, pump and probe laws in twin units.
    """
    z = 2.0 * z_top * np.linspace(0.0, 1.0, 301) ** 2
    t = spot_amplitude_transmission(law, z ** 2, alpha0)
    return TabulatedAbsorber(z, z * t, probe_z=z, probe_t=t)


def _spot_result(base: Fit, law: str, f: dict, pump: Sweep, probe_pump, probe_t) -> Fit:
    alpha0, i_sat, c_pump = f["params"]["alpha0"], f["params"]["i_sat"], f["params"]["scale"]
    se = f["stderr"]
    absorber = spot_law_table(law, alpha0, math.sqrt(pump.x.max() / i_sat))
    quantities = {"alpha0": Quantity(alpha0, se["alpha0"], ""),
                  "i_sat": Quantity(i_sat, se["i_sat"], "input units"),
                  "background_transmission": Quantity(c_pump, se["scale"], "")}
    info = dict(base.info)
    warnings = [w for w in info.get("warnings", []) if "no parametric model fits" not in w]
    probe_fn, t_source = None, "model probe law (spot-averaged)"
    if probe_pump is not None:
        pr = sweep_of("probe", probe_pump, probe_t)
        pf = fit_spot_model(law, pr, (alpha0, i_sat))
        quantities["probe_background_transmission"] = Quantity(pf["params"]["scale"], pf["stderr"]["scale"], "")
        pa, pi = pf["params"]["alpha0"], pf["params"]["i_sat"]

        def probe_fn(zz, pa=pa, pi=pi):
            return spot_amplitude_transmission(law, zz ** 2 * i_sat / pi, pa)
        t_source = f"probe sweep ({law}{SPOT_SUFFIX} fit)"
        info["probe_model"] = law + SPOT_SUFFIX
        info["probe_table"] = {law + SPOT_SUFFIX: table_row(pf)}
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

    Parameters
    ----------
    absorber : Fit
        The absorber fit (``i_sat`` in ``h_z1^2`` units, ``background_transmission``).
    previous : Fit, optional
        An existing scale fit whose other quantities (``z2_per_h``, ``delta1_per_h``) are kept.

    Returns
    -------
    Fit
        Named 'scale': ``z1_per_h`` and ``a1_per_h`` (twin field per homodyne unit).
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
    x, y, sigma : (n_steps, n_neurons) array_like
        Inputs, outputs (> 0 where usable) and the outputs' standard errors (any consistent
        power units).
    usable : (n_steps, n_neurons) array_like of bool
        Points to use.
    degree : int
        Degree of the polynomial in ``ln x``.
    shift : bool
        Also fit the input scales ``q_k``.
    n_iter : int
        Gauss-Newton iterations at most.

    Returns
    -------
    r, q : (n_neurons,) ndarray
        Output and input scales (dimensionless, geometric mean 1; 1 where undetermined).
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


def law_transmission(law: str, spot: bool, s, alpha0: float):
    """Intensity transmission of the law (spot-averaged or not) at saturation parameter ``s``."""
    if spot:
        return spot_amplitude_transmission(law, s, alpha0) ** 2
    return make_absorber(law, alpha0=alpha0, i_sat=1.0).probe(np.sqrt(np.clip(s, 0.0, None))) ** 2


def fit_point_probe(law: str, sweep: Sweep, start) -> dict:
    """Probe sweep ``c T(x / i_sat)`` with a point law (lmfit; same output layout as fit_spot_model)."""
    x, y, sig = sweep.x, sweep.y, sweep.sigma
    params = lmfit.Parameters()
    params.add("alpha0", value=max(start[0], 1e-3), min=0.0, max=500.0)
    params.add("i_sat", value=start[1], min=start[1] * 1e-3)
    t0 = law_transmission(law, False, x / start[1], start[0])
    params.add("scale", value=float(np.sum(t0 * y / sig ** 2) / max(np.sum((t0 / sig) ** 2), 1e-300)), min=0.0)

    def resid(p):
        return (p["scale"].value * law_transmission(law, False, x / p["i_sat"].value, p["alpha0"].value) - y) / sig

    res = lmfit.minimize(resid, params, method="leastsq", scale_covar=True)
    r = resid(res.params)
    n, k, chi2, redchi, crit = fit_summary(r, res.nvarys, sweep.noise_dof)

    return {"params": {n_: float(res.params[n_].value) for n_ in ("alpha0", "i_sat", "scale")},
            "stderr": {n_: param_stderr(res.params[n_]) for n_ in ("alpha0", "i_sat", "scale")}, "redchi": redchi,
            "adequate": bool(redchi <= crit)}

