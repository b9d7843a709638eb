"""Joint absorber fit of every hidden neuron's pump sweep: law selection and its uncertainties.

Every law and its spot-averaged variant (:mod:`calibration.absorber_spot_fit`) is fitted to all
neurons at once (:func:`fit_law_jointly`: per-neuron output and input scales for the
spot-to-spot differences of the homodyne conversions, the stray quadrature in the saturation,
alpha0 drifting linearly in time, weights from the measured variances), started from pooled
fits (:func:`calibration.absorber_spot_fit.analyse_absorber` after a model-free alignment) and
a coarse grid; the lowest BIC wins (:func:`select_law_jointly`).  Standard errors: the largest
of the covariance ones (measured variances), the leave-one-neuron-out jackknife's and a
delete-a-group jackknife over the sweep steps (the points of one step share its frames and err
together on every neuron; ``info['covariance_stderr']``, ``info['jackknife_stderr']``,
``info['step_jackknife_stderr']``).  A spot-averaged winner is tabulated for the twin (model
``'tabulated'``, ``info['parametric_model']`` the law, ``info['spot_averaged']`` True).  No
law fitting at all falls back to the pooled fit.  The probe sweep is fitted separately with
the chosen law and gives the measured probe-vs-derivative mismatch.

Units: powers in ``h_z1^2`` (input) and ``h_a1^2`` (output),
``i_sat`` in ``h_z1^2``; ``alpha0`` is the value at the sweep's middle
(``info['alpha0_at_s']``, bench clock), ``alpha0_drift_per_hour`` its fitted drift.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import lmfit
import numpy as np
from scipy import stats

from calibration.absorber_fit import CHI2_P, MODELS, derivative_mismatch
from calibration.residual_tests import RUNS_Z, runs_test_z
from calibration.absorber_spot_fit import (SPOT_SUFFIX, fit_point_probe, fit_spot_model, law_transmission,
                                           spot_law_table, sweep_of)
from calibration.quantities import Fit, Quantity, param_stderr
from twin.absorber import make_absorber

__all__ = ["NeuronSweeps", "fit_law_jointly", "jackknife_neurons", "jackknife_steps", "select_law_jointly",
           "law_margin"]


@dataclass
class NeuronSweeps:
    """Pump-sweep points of every neuron, with measured variances and times.

    p_in, p_out : powers (``h^2`` minus the variance of the mean), one per usable point.
    var_in, var_out : their variances (from the repeats).
    neuron : neuron index of each point; t_h : time of each point (hours, 0 = mid-sweep).
    im2 : squared quadrature (imaginary part) of z1 at each point, same units as p_in: the cell
        saturates on ``|z1|^2 = p_in + im2``, the homodyne sees only the real part.
    step : sweep step of each point (the points of one step share its frames and settings);
        enables the step jackknife (:func:`jackknife_steps`).
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

    Parameters
    ----------
    law : str
        Point law ('thin', 'twolevel', 'doppler').
    spot : bool
        Fit its spot-averaged variant.
    data : NeuronSweeps
        Every neuron's points (powers in ``h_z1^2`` / ``h_a1^2`` units, times in hours).
    start : (float, float)
        Starting ``(alpha0, i_sat)`` (dimensionless, ``h_z1^2`` units).
    r0, q0 : (n_neurons,) array_like, optional
        Starting output and input scales (dimensionless; default 1).

    Returns
    -------
    dict
        ``params`` and ``stderr`` of ``alpha0`` (dimensionless), ``i_sat`` (``h_z1^2``), ``tbg``
        (dimensionless) and ``drift`` (1/h); ``chi2``, ``redchi``, ``redchi_limit``, ``runs_z``,
        ``adequate``, ``aic``, ``bic``, ``r``, ``q``, ``x``/``y``/``y_fit`` (aligned powers).
    """
    model = _JointModel(law, spot, data, start, r0, q0)
    # the weights are measured variances: standard errors from them, inflated (never shrunk) by
    # the reduced chi^2 when the scatter exceeds them
    res = lmfit.minimize(model.resid, model.params, method="leastsq", scale_covar=False)
    return _joint_result(model, res)


class _JointModel:
    """The joint model of :func:`fit_law_jointly`: starting parameters, prediction, weighted residuals."""

    def __init__(self, law: str, spot: bool, data: NeuronSweeps, start: tuple, r0, q0):
        self.law, self.spot, self.data = law, spot, data
        n = self.n = data.n_neurons
        k_idx = self.k_idx = data.neuron
        xin, yout = self.xin, self.yout = data.p_in, data.p_out
        im2 = self.im2 = np.zeros_like(xin) if data.im2 is None else np.asarray(data.im2, float)
        a0, i0 = float(start[0]), float(start[1])
        r0 = np.ones(n) if r0 is None else np.asarray(r0, float)
        q0 = np.ones(n) if q0 is None else np.asarray(q0, float)
        lr0, lq0 = np.log(r0) - np.log(r0).mean(), np.log(q0) - np.log(q0).mean()
        # linear start for T_bg
        X0 = xin / q0[k_idx]
        f0 = r0[k_idx] * X0 * law_transmission(law, spot, X0 / i0, a0)
        w0 = 1.0 / np.maximum(np.sqrt(data.var_out), 1e-300)
        tb0 = float(np.sum(f0 * yout * w0 ** 2) / max(np.sum((f0 * w0) ** 2), 1e-300))
        params = self.params = lmfit.Parameters()
        params.add("alpha0", value=max(a0, 1e-3), min=0.0, max=500.0)
        params.add("i_sat", value=i0, min=i0 * 1e-3)
        params.add("tbg", value=max(tb0, 1e-12), min=0.0)
        params.add("drift", value=0.0)
        for j in range(n - 1):
            params.add(f"lr{j}", value=float(lr0[j]))
            params.add(f"lq{j}", value=float(lq0[j]))
        eps_a = 1e-4
        # d ln T / d alpha0 at the start (drift term); the drift over a sweep is a small correction
        s_start = (X0 + im2 / q0[k_idx]) / i0
        self.dlnt = (np.log(np.maximum(law_transmission(law, spot, s_start, a0 + eps_a), 1e-300))
                     - np.log(np.maximum(law_transmission(law, spot, s_start, a0), 1e-300))) / eps_a
        eps = 1e-4
        slope = (self(params, xin * (1 + eps)) - self(params, xin)) / (eps * np.maximum(xin, 1e-300))
        sig = np.sqrt(data.var_out + slope ** 2 * data.var_in)
        self.sig = np.maximum(sig, 1e-4 * np.abs(yout) + 1e-300)

    def scales(self, p):
        """Output and input scales ``(r, q)`` (n_neurons,) of parameters ``p``."""
        n = self.n
        lr = np.array([p[f"lr{j}"].value for j in range(n - 1)])
        lq = np.array([p[f"lq{j}"].value for j in range(n - 1)])
        return np.exp(np.append(lr, -lr.sum())), np.exp(np.append(lq, -lq.sum()))

    def __call__(self, p, xx=None):
        """Predicted ``P_out`` at the data's inputs (or at ``xx``)."""
        k_idx = self.k_idx
        r, q = self.scales(p)
        X = (self.xin if xx is None else xx) / q[k_idx]
        a = p["alpha0"].value
        s_ = (X + self.im2 / q[k_idx]) / p["i_sat"].value
        t = law_transmission(self.law, self.spot, s_, a)
        drift = p["drift"].value
        if drift != 0.0:       # alpha0 + drift t: first order (the drift over a sweep is small)
            t = t * np.exp(self.dlnt * drift * self.data.t_h)
        return r[k_idx] * p["tbg"].value * X * t

    def resid(self, p):
        """Normalised residuals."""
        return (self(p) - self.yout) / self.sig


def _joint_result(model: _JointModel, res) -> dict:
    """The result dict of :func:`fit_law_jointly` from the minimiser's result."""
    law, spot, k_idx, xin, yout = model.law, model.spot, model.k_idx, model.xin, model.yout
    inflate = math.sqrt(max(1.0, float(res.redchi)))

    def se(name):
        return param_stderr(res.params[name]) * inflate

    r_ = model.resid(res.params)
    nn, kk = r_.size, res.nvarys
    chi2 = float(r_ @ r_)
    dof = max(nn - kk, 1)
    crit = float(stats.chi2.ppf(CHI2_P, dof) / dof)
    order = np.argsort(xin / model.scales(res.params)[1][k_idx], kind="stable")
    runs = runs_test_z(r_[order])
    adequate = bool(chi2 / dof <= crit and runs > RUNS_Z)
    r, q = model.scales(res.params)
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
        t = law_transmission(law, spot, X[None, :] / i_grid[:, None], a0)        # (n_i, n)
        fw = f_r * t * w
        yw = data.p_out * w
        c = np.sum(fw * yw, 1) / np.maximum(np.sum(fw * fw, 1), 1e-300)
        chi = np.sum((yw - c[:, None] * fw) ** 2, 1)
        j = int(np.argmin(chi))
        if chi[j] < best[0]:
            best = (float(chi[j]), (float(a0), float(i_grid[j])))
    return best[1]


def jackknife_neurons(law: str, spot: bool, data: NeuronSweeps, full: dict) -> dict:
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


def jackknife_steps(law: str, spot: bool, data: NeuronSweeps, full: dict, n_groups: int = 10) -> dict:
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
    """The model-comparison table row of a joint fit (with the alpha0 drift)."""
    return {"aic": f["aic"], "bic": f["bic"], "redchi": f["redchi"], "redchi_limit": f["redchi_limit"],
            "runs_z": f["runs_z"], "adequate": f["adequate"],
            "alpha0": [f["params"]["alpha0"], f["stderr"]["alpha0"]],
            "i_sat": [f["params"]["i_sat"], f["stderr"]["i_sat"]],
            "alpha0_drift_per_hour": [f["params"]["drift"], f["stderr"]["drift"]]}


def select_law_jointly(data: NeuronSweeps, pooled: Fit, probe_x=None, probe_y=None, *, models=MODELS,
                       spot_models: bool = True) -> Fit:
    """Fit every law (and its spot-averaged variant) with :func:`fit_law_jointly`, pick the lowest
    BIC, and assemble the 'absorber' Fit.

    Parameters
    ----------
    data : NeuronSweeps
        Every neuron's pump-sweep points (``h_z1^2`` / ``h_a1^2`` units).
    pooled : Fit
        :func:`calibration.absorber_spot_fit.analyse_absorber` of the same data pooled after a
        model-free alignment: its parameters start the joint fits, and it is the result when no
        law fits (its tabulated fallback).
    probe_x, probe_y : array_like, optional
        Aligned probe sweep: pump power (``h_z1^2``) and probe power transmission (any scale).
    models : sequence of str
        Point laws to try.
    spot_models : bool
        Also try the spot-averaged variant of every law.

    Returns
    -------
    Fit
        Named 'absorber': quantities ``alpha0`` (dimensionless), ``i_sat`` (``h_z1^2``),
        ``background_transmission``, ``alpha0_drift_per_hour`` (1/h) and, with a probe sweep,
        ``probe_background_transmission``; info ``table``, ``mismatch``, ``neuron_*_scales``.
    """
    table_pooled = pooled.info.get("table", {})
    fits = _fit_every_law(data, pooled, models, spot_models)
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
    p = f["params"]
    se = _largest_stderr(law, spot, data, f, info)
    alpha0, i_sat = p["alpha0"], p["i_sat"]
    absorber, model, arrays = _chosen_absorber(law, spot, alpha0, i_sat, f)
    quantities = {"alpha0": Quantity(alpha0, se["alpha0"], ""),
                  "i_sat": Quantity(i_sat, se["i_sat"], "input units"),
                  "background_transmission": Quantity(p["tbg"], se["tbg"], ""),
                  "alpha0_drift_per_hour": Quantity(p["drift"], se["drift"], "1/h")}
    probe_fn, t_source = _probe_law(law, spot, best, probe_x, probe_y, (alpha0, i_sat), quantities, info, warnings)
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


def _fit_every_law(data: NeuronSweeps, pooled: Fit, models, spot_models: bool) -> dict:
    """name -> the best :func:`fit_law_jointly` result of every law (and spot variant) that fitted.

    Starts: the pooled fit's parameters and the best point of a coarse grid (the joint fit has
    many parameters and stalls in side minima from a poor start).
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
    return fits


def _largest_stderr(law: str, spot: bool, data: NeuronSweeps, f: dict, info: dict) -> dict:
    """Standard errors of the chosen fit ``f``: the largest of the covariance ones and the two
    jackknifes' (each recorded in ``info``)."""
    se = dict(f["stderr"])
    info["covariance_stderr"] = dict(se)
    for label, jack in (("jackknife_stderr", jackknife_neurons(law, spot, data, f)),
                        ("step_jackknife_stderr", jackknife_steps(law, spot, data, f))):
        if jack:
            for key, v in jack.items():
                if np.isfinite(v) and not (v <= se.get(key, np.inf)):
                    se[key] = v
            info[label] = jack
    return se


def _chosen_absorber(law: str, spot: bool, alpha0: float, i_sat: float, f: dict):
    """(twin absorber, Fit model name, arrays) of the chosen law: a spot-averaged one tabulated."""
    if spot:
        absorber = spot_law_table(law, alpha0, math.sqrt(float(np.max(f["x"])) / i_sat))
        arrays = {"tabulated_z_in": absorber.z_in, "tabulated_z_out": absorber.z_out,
                  "tabulated_probe_z": absorber.probe_z, "tabulated_probe_t": absorber.probe_t}
        return absorber, "tabulated", arrays
    return make_absorber(law, alpha0=alpha0, i_sat=1.0), law, {}


def _probe_law(law: str, spot: bool, best: str, probe_x, probe_y, start: tuple, quantities: dict, info: dict,
               warnings: list):
    """The probe sweep fitted with the chosen law (scale, alpha0, i_sat): the measured ``t(z)``.

    Adds ``probe_background_transmission`` to ``quantities``, the probe fit to ``info`` and notes
    to ``warnings``; returns ``(probe_fn, t_source)`` for the mismatch (``probe_fn`` None: the
    fitted law's own probe).
    """
    alpha0, i_sat = start
    probe_fn, t_source = None, ("model probe law (spot-averaged)" if spot else "model probe law")
    if probe_x is None or len(probe_x) < 8:
        return probe_fn, t_source
    try:
        ps = sweep_of("probe", probe_x, probe_y)
        if spot:
            pf = fit_spot_model(law, ps, (alpha0, i_sat))
        else:
            pf = fit_point_probe(law, ps, (alpha0, i_sat))
        quantities["probe_background_transmission"] = Quantity(pf["params"]["scale"], pf["stderr"]["scale"], "")
        pa, pi = pf["params"]["alpha0"], pf["params"]["i_sat"]
        rel = max(pf["stderr"]["alpha0"] / max(pa, 1e-300), pf["stderr"]["i_sat"] / max(pi, 1e-300),
                  pf["stderr"]["scale"] / max(pf["params"]["scale"], 1e-300))
        if pf["adequate"] and np.isfinite(rel) and rel < 0.25:
            def probe_fn(zz, pa=pa, pi=pi):
                return np.sqrt(law_transmission(law, spot, zz ** 2 * i_sat / pi, pa))
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
    return probe_fn, t_source


def law_margin(fit: Fit) -> float:
    """BIC lead of the chosen law over the best law of another family (inf when alone)."""
    table = fit.info.get("table", {})
    chosen = fit.info.get("parametric_model", fit.model) + (SPOT_SUFFIX if fit.info.get("spot_averaged") else "")
    if chosen not in table:
        return float("nan")
    others = [row["bic"] for name, row in table.items() if name != chosen]
    return float(min(others) - table[chosen]["bic"]) if others else float("inf")
