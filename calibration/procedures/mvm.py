"""Matrix-vector multiplier calibration: MVM-1 forward, MVM-2 forward, MVM-2 backward.

Model (twin units, :class:`twin.layers.OpticalLinear`)::

    forward:   y = C (G * W) x + s                      C: output crosstalk, diag(C) = 1
    backward:  d1 = t(z1) * ((Gb * W2)^T Cb^T d2) + sb   (the probe retraces layer 2)

``W`` is the programmed matrix in twin units; the encoder shows the amplitude fraction
``A = W / w_max`` on the SLM, so at full amplitude an element realises ``G_ij * w_max``.
The fits use what the devices realise: ``T(A)`` from the SLM fit's amplitude transfer
table (:func:`calibration.slm_fit.transfer_table`: LUT rounding and response residuals,
scaled to +-1 at full amplitude) and the DMD's fill fractions for ``x``; the twin applies
the same table (``twin.layers.Imperfections.transfer``).

Probes (:func:`measure_mvm`), each repeated ``repeats`` times (LO phases 0 and pi):

* stray: every weight zero (the output is the stray field ``s``);
* one-hot: elements at full amplitude with their input on, one per output spot (layer 1:
  ``x = e_j`` and column ``j`` on every 7th row; layer 2: only hidden neuron ``j`` pumped and
  column ``j`` on every 7th row; backward: a whole row of slm2 with the probe on one output at
  a time; :func:`mvm_plans`), which gives ``G`` and ``C`` directly;
* random: random signed amplitudes and random inputs; half of them refine the fit, the
  other half (held out) give the errors.

Inputs and outputs in twin units: layer 1 input = DMD fill fraction (exact), output
``z1 = z1_per_h h_z1``; layer 2 input ``a1 = a1_per_h h_a1`` (measured at the same time),
output ``h_out``; backward input = probe amplitude fraction ``d2`` (``w_max`` of the probe
panel is 1, as :class:`hwio.bench_system.BenchSystem` drives it), output ``h_back`` with
the cell pumped by every hidden neuron at full amplitude (every input on; a wide input layer
at the weaker input the exposure step chose, ``exposure.backward_pump_fill``); ``t(z1)`` from the absorber fit's probe law at the measured ``z1``.

Conventions that fix the free scales:

* ``w_max`` = the largest ``|G_ij| w_max`` over the elements (so ``max |gain| = 1``);
* ``z2_per_h`` makes ``w_max(mvm2) = 1``: twin ``z2`` is measured in units of the output of
  the best element at full amplitude with ``a1 = 1``;
* ``delta1_per_h`` makes the backward realised matrix equal to the forward one in least
  squares (reciprocity on average); ``mvm2_backward.gain`` keeps every element's
  deviation (probe-panel illumination, non-reciprocity).

Errors (:func:`twin.stats.mvm_error_stats` on the held-out random probes): the
``systematic_nrmse`` of the mean measurement against the *fitted* model (what the
calibrated twin still gets wrong), ``ideal_systematic_nrmse`` against the programmed ideal
``W x`` (the uncorrected error of the paper's Fig. 2a), ``shot_to_shot_nrmse``;
``readout_noise`` is the rms shot-to-shot scatter of one output in twin units.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.quantities import Fit, Quantity
from twin.stats import mvm_error_stats

__all__ = ["fit_mvm_model", "fit_mvm_selected", "predict_mvm", "mvm_fit_record", "mvm_plans", "measure_mvm", "MVM_NAMES"]

MVM_NAMES = ("mvm1", "mvm2", "mvm2_backward")


# ============================================================================ model
def predict_mvm(x, amps, gain, mixing=None, stray=None, *, side: str = "output", factor=None):
    """Outputs of ``y = F * (L (G * A) R x) + s`` for samples.

    Parameters
    ----------
    x : (S, n_in) inputs.
    amps : (S, n_out, n_in) programmed matrices (amplitude fractions or twin weights).
    gain : (n_out, n_in) per-element gains.
    mixing : (n, n) crosstalk; on the output side (``L``, n = n_out) or the input side
        (``R``, n = n_in); None = identity.
    stray : (n_out,) additive field.
    factor : (S, n_out) multiplier per sample and output (backward: the cell's t(z1)).
    """
    x = np.asarray(x, float)
    v = x if (mixing is None or side == "output") else x @ np.asarray(mixing).T
    u = _apply(np.asarray(amps, float) * np.asarray(gain, float), v)
    if mixing is not None and side == "output":
        u = u @ np.asarray(mixing).T
    if factor is not None:
        u = u * factor
    if stray is not None:
        u = u + stray
    return u


def _apply(m, v):
    """Per-sample matrix-vector products: (S, n_out, n_in) @ (S, n_in) -> (S, n_out)."""
    return np.matmul(m, v[:, :, None])[:, :, 0]


def _lstsq(design, target):
    """Least-squares solution; a tall, well-conditioned design (a wide bench's tens of thousands of
    readings) through the normal equations, an SVD solve costing seconds per iteration."""
    m, n = design.shape
    if m > 2000 and m > 20 * n:
        gram = design.T @ design
        if np.linalg.cond(gram) < 1e10:
            return np.linalg.solve(gram, design.T @ target)
    sol, *_ = np.linalg.lstsq(design, target, rcond=None)
    return sol


#: above this many gain and stray parameters an output-side fit solves the gains row by row
DENSE_MAX_PARAMS = 200


def _row_designs(x, a, F, mix, side):
    """Designs of the per-row gain/stray solves, stacked: (n_out, S, n_in + 1).

    Input side: rows are independent (exact).  Output side (large problems only): in the frame
    whitened by the mixing, ``L^-1 y = (G*A) x + L^-1 s``, rows are independent too (least
    squares in that frame; ``L`` is near the identity, so it is the ordinary fit to within the
    crosstalk's square).
    """
    v = x if side == "output" else x @ mix.T
    S, n_out, n_in = a.shape
    d = np.empty((n_out, S, n_in + 1))
    np.multiply(np.transpose(a, (1, 0, 2)), (F.T[:, :, None] * v[None, :, :]), out=d[:, :, :n_in])
    d[:, :, n_in] = 1.0
    return d


class _StackSolver:
    """Least squares for a stack of designs ``d`` (B, m, p), factorised once: ``solver(t)``
    with targets ``t`` (B, m) returns (B, p).

    Batched QR (as stable as an SVD solve for full-rank designs); a rank-deficient design is
    solved with ``lstsq`` for its row."""

    def __init__(self, d):
        self.d = d
        q, r = np.linalg.qr(d)
        diag = np.abs(np.diagonal(r, axis1=1, axis2=2))
        self.ok = diag.min(axis=1) > 1e-10 * np.maximum(diag.max(axis=1), 1e-300)
        # R^-1 Q^T of the full-rank designs: one small product per solve
        self.pinv = np.linalg.solve(r[self.ok], np.transpose(q[self.ok], (0, 2, 1))) if self.ok.any() else None

    def __call__(self, t):
        out = np.empty((self.d.shape[0], self.d.shape[2]))
        if self.pinv is not None:
            out[self.ok] = np.einsum("bpm,bm->bp", self.pinv, t[self.ok])
        for b in np.flatnonzero(~self.ok):
            out[b] = np.linalg.lstsq(self.d[b], t[b], rcond=None)[0]
        return out


def _batched_lstsq(d, t):
    """Least squares of a stack of designs ``d`` (B, m, p) and targets ``t`` (B, m): (B, p)."""
    return _StackSolver(d)(t)


def _solve_rows(x, a, y, F, mix, side, solver=None):
    """Gains and stray from independent per-row least squares (see :func:`_row_designs`);
    ``solver``: the output side's :class:`_StackSolver` (its designs do not depend on the mixing)."""
    S, n_out, n_in = a.shape
    target = np.linalg.solve(mix, y.T).T if side == "output" else y
    if solver is None:
        solver = _StackSolver(_row_designs(x, a, F, mix, side))
    sol = solver(target.T)
    gain, stray = sol[:, :-1].copy(), sol[:, -1].copy()
    if side == "output":
        stray = mix @ stray
    return gain, stray


def _rows_se(x, a, F, mix, side, sigma2):
    """Standard errors of the per-row solve (gain (n_out, n_in), stray (n_out,))."""
    d = _row_designs(x, a, F, mix, side)
    gram = np.einsum("bmp,bmq->bpq", d, d)
    try:
        cov = np.linalg.pinv(gram) * sigma2
    except np.linalg.LinAlgError:
        n_out, p = d.shape[0], d.shape[2]
        return np.full((n_out, p - 1), np.nan), np.full(n_out, np.nan)
    se = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
    return se[:, :-1], se[:, -1]


def _mixing_rows(u, y, F, off, stray, sigma2=None):
    """Output-side mixing rows (and stray) with the gains fixed: row ``i`` solves
    ``y_i - F_i u_i = sum_k L_ik F_i u_k + s_i`` over its free elements ``off[i]``.  Rows with
    the same number of free elements are solved together.  With ``sigma2`` returns the
    standard errors (n, n) instead of (mixing, stray)."""
    S, n = u.shape
    width = off.sum(axis=1)
    new = np.eye(n)
    se = np.zeros((n, n))
    for w in np.unique(width):
        rows = np.flatnonzero(width == w)
        ks = np.array([np.flatnonzero(off[i]) for i in rows]).reshape(rows.size, int(w))
        d = np.empty((rows.size, S, int(w) + 1))
        d[:, :, :int(w)] = F.T[rows][:, :, None] * u.T[ks].transpose(0, 2, 1)
        d[:, :, int(w)] = 1.0
        if sigma2 is not None:
            gram = np.einsum("bmp,bmq->bpq", d, d)
            cov = np.linalg.pinv(gram) * sigma2
            diag = np.sqrt(np.clip(np.diagonal(cov, axis1=1, axis2=2), 0.0, None))
            for b, i in enumerate(rows):
                se[i, ks[b]] = diag[b, :int(w)]
            continue
        t = (y[:, rows] - F[:, rows] * u[:, rows]).T
        sol = _batched_lstsq(d, t)
        for b, i in enumerate(rows):
            new[i, ks[b]] = sol[b, :int(w)]
            stray[i] = sol[b, int(w)]
    return se if sigma2 is not None else (new, stray)


def fit_mvm_model(x, amps, y, *, side: str = "output", factor=None, crosstalk: bool = True,
                  gain0=None, n_iter: int = 30, tol: float = 1e-10, band: int | None = None) -> dict:
    """Least-squares fit of gains, crosstalk and stray field (alternating linear solves).

    Model ``y = F * (L (G * A) R x) + s`` (see :func:`predict_mvm`), with ``diag(L) = 1``
    (``side='output'``) or ``diag(R) = 1`` (``side='input'``).

    Parameters
    ----------
    x : (S, n_in) inputs; amps : (S, n_out, n_in) programmed matrices; y : (S, n_out) outputs.
    side : where the crosstalk acts.
    factor : optional (S, n_out) known multiplier.
    crosstalk : fit the crosstalk (else identity).
    band : free crosstalk elements only within ``|i - k| <= band`` of the diagonal (None:
        every element; the finite aperture couples neighbouring rows, so a narrow band
        avoids fitting noise into hundreds of far elements; see :func:`fit_mvm_selected`).
    gain0 : optional starting gains.

    Returns
    -------
    dict with ``gain``, ``gain_stderr`` (n_out, n_in), ``crosstalk``, ``crosstalk_stderr``,
    ``stray``, ``stray_stderr``, ``residual_rms``, ``dof``, ``iterations``.
    """
    x = np.asarray(x, float)
    a = np.asarray(amps, float)
    y = np.asarray(y, float)
    S, n_out, n_in = a.shape
    if x.shape != (S, n_in) or y.shape != (S, n_out):
        raise ValueError(f"shapes do not match: x {x.shape}, amps {a.shape}, y {y.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(a)) and np.all(np.isfinite(y))):
        raise ValueError("MVM data contain NaN or inf")
    if side not in ("output", "input"):
        raise ValueError(f"side must be 'output' or 'input', got {side!r}")
    F = np.ones((S, n_out)) if factor is None else np.asarray(factor, float)
    n_mix = n_out if side == "output" else n_in
    mix = np.eye(n_mix)
    gain = np.ones((n_out, n_in)) if gain0 is None else np.array(gain0, float)
    stray = np.zeros(n_out)
    eye_out = np.eye(n_out)
    off = ~np.eye(n_mix, dtype=bool)
    if band is not None:
        if band < 0:
            raise ValueError(f"band must be >= 0 (or None for a full crosstalk matrix), got {band}")
        idx = np.arange(n_mix)
        off &= np.abs(idx[:, None] - idx[None, :]) <= band
    crosstalk = bool(crosstalk and off.any())
    p_g = n_out * n_in + n_out
    p_c = int(off.sum()) if crosstalk else 0
    if S * n_out <= p_g + p_c:
        raise ValueError(f"{S} samples x {n_out} outputs cannot determine {p_g + p_c} parameters; "
                         f"measure more probes")
    # rows solved one by one: exact on the input side; on the output side only for large
    # problems (the joint solve costs S n_out p_g^2: a 64-input, 32-neuron layer is hours)
    rows = side == "input" or (factor is None and p_g > DENSE_MAX_PARAMS)
    solver = _StackSolver(_row_designs(x, a, F, mix, side)) if rows and side == "output" else None
    g_design = None
    it = 0
    prev = np.inf
    for it in range(1, n_iter + 1):
        # -- gains and stray, mixing fixed
        if rows:
            gain, stray = _solve_rows(x, a, y, F, mix, side, solver)
        elif side == "output":
            v = x
            coef = np.einsum("si,ik,skj,sj->sikj", F, mix, a, v)
        else:
            v = x @ mix.T
            coef = np.einsum("si,sij,sj->sij", F, a, v)
            coef = np.einsum("sij,ik->sikj", coef, eye_out)
        if not rows:
            design = np.concatenate([coef.reshape(S * n_out, n_out * n_in),
                                     np.tile(eye_out, (S, 1))], axis=1)
            sol = _lstsq(design, y.ravel())
            gain = sol[:n_out * n_in].reshape(n_out, n_in)
            stray = sol[n_out * n_in:]
            g_design = design
        if not crosstalk:
            break
        # -- mixing and stray, gains fixed
        if side == "output":
            u = _apply(a * gain, x)                                # (S, n_out) before mixing
            mix, stray = _mixing_rows(u, y, F, off, stray)
        else:
            m = a * gain                                           # (S, n_out, n_in)
            cols = []
            pairs = [(j, q) for j in range(n_in) for q in range(n_in) if off[j, q]]
            for j, q in pairs:
                cols.append((F * m[:, :, j] * x[:, q, None]).ravel())
            design_c = np.concatenate([np.stack(cols, 1), np.tile(eye_out, (S, 1))], axis=1)
            base = F * _apply(m, x)
            sol_c = _lstsq(design_c, (y - base).ravel())
            new = np.eye(n_in)
            for (j, q), val in zip(pairs, sol_c[:len(pairs)]):
                new[j, q] = val
            mix = new
            stray = sol_c[len(pairs):]
        r = y - predict_mvm(x, a, gain, mix, stray, side=side, factor=F)
        rss = float(np.sum(r ** 2))
        if abs(prev - rss) <= tol * max(rss, 1e-300):
            break
        prev = rss
    # final linear solve for gains with the final mixing (consistent stray), then uncertainties
    if crosstalk and rows:
        gain, stray = _solve_rows(x, a, y, F, mix, side, solver)
    elif crosstalk:
        if side == "output":
            coef = np.einsum("si,ik,skj,sj->sikj", F, mix, a, x)
        else:
            coef = np.einsum("si,sij,sj->sij", F, a, x @ mix.T)
            coef = np.einsum("sij,ik->sikj", coef, eye_out)
        g_design = np.concatenate([coef.reshape(S * n_out, n_out * n_in), np.tile(eye_out, (S, 1))], axis=1)
        sol = _lstsq(g_design, y.ravel())
        gain = sol[:n_out * n_in].reshape(n_out, n_in)
        stray = sol[n_out * n_in:]
    r = y - predict_mvm(x, a, gain, mix if crosstalk else None, stray, side=side, factor=F)
    dof = max(S * n_out - p_g - p_c, 1)
    sigma2 = float(np.sum(r ** 2)) / dof
    if rows:
        gain_se, stray_se = _rows_se(x, a, F, mix, side, sigma2)
    else:
        g_se = _param_se(g_design, sigma2)
        gain_se = g_se[:n_out * n_in].reshape(n_out, n_in)
        stray_se = g_se[n_out * n_in:]
    mix_se = np.zeros_like(mix)
    if crosstalk:
        if side == "output":
            u = _apply(a * gain, x)
            mix_se = _mixing_rows(u, y, F, off, stray.copy(), sigma2=sigma2)
        else:
            m = a * gain
            pairs = [(j, q) for j in range(n_in) for q in range(n_in) if off[j, q]]
            cols = [(F * m[:, :, j] * x[:, q, None]).ravel() for j, q in pairs]
            design_c = np.concatenate([np.stack(cols, 1), np.tile(eye_out, (S, 1))], axis=1)
            for (j, q), val in zip(pairs, _param_se(design_c, sigma2)[:len(pairs)]):
                mix_se[j, q] = val
    return {"gain": gain, "gain_stderr": gain_se, "crosstalk": mix, "crosstalk_stderr": mix_se,
            "stray": stray, "stray_stderr": stray_se, "residual_rms": math.sqrt(sigma2), "dof": dof,
            "iterations": it, "side": side, "n_params": p_g + p_c, "band": band}


def fit_mvm_selected(x, amps, y, *, side: str = "output", factor=None, bands=(0, 1, 2, 3, None),
                     n_folds: int = 5) -> dict:
    """:func:`fit_mvm_model` with the crosstalk band chosen by ``n_folds``-fold cross-validation
    (the band whose fits predict the left-out probes best); ``fit['band']`` and
    ``fit['band_cv_rms']`` ({band: rms prediction error of the left-out probes})."""
    x, a, y = np.asarray(x, float), np.asarray(amps, float), np.asarray(y, float)
    S = len(y)
    F = None if factor is None else np.asarray(factor, float)
    n_mix = a.shape[1] if side == "output" else a.shape[2]
    folds = np.arange(S) % max(2, min(n_folds, S))
    table, best = {}, None
    for band in bands:
        if band is not None and band >= n_mix - 1 and None in bands:
            continue                                 # the same as the full matrix
        sq, n = 0.0, 0
        try:
            for k in np.unique(folds):
                tr, te = folds != k, folds == k
                fit = fit_mvm_model(x[tr], a[tr], y[tr], side=side, factor=None if F is None else F[tr], band=band)
                pred = predict_mvm(x[te], a[te], fit["gain"], fit["crosstalk"], fit["stray"], side=side,
                                   factor=None if F is None else F[te])
                sq += float(np.sum((y[te] - pred) ** 2))
                n += y[te].size
        except ValueError:
            continue                                 # too many parameters for the probes
        rms = math.sqrt(sq / n)
        table["full" if band is None else str(band)] = rms
        if best is None or rms < best[0]:
            best = (rms, band)
    if best is None:
        raise ValueError("no crosstalk model can be fitted to these probes; measure more probes")
    fit = fit_mvm_model(x, a, y, side=side, factor=F, band=best[1])
    fit["band_cv_rms"] = table
    return fit


def _param_se(design, sigma2):
    try:
        cov = np.linalg.pinv(design.T @ design) * sigma2
    except np.linalg.LinAlgError:
        return np.full(design.shape[1], np.nan)
    return np.sqrt(np.clip(np.diag(cov), 0.0, None))


def mvm_fit_record(name: str, fit: dict, *, w_max: float, w_max_stderr: float, held_out: dict,
                   readout_noise: float, info: dict | None = None, gain_scale: float = 1.0) -> Fit:
    """Assemble the contract's ``Fit`` for one MVM.

    Parameters
    ----------
    name : 'mvm1', 'mvm2' or 'mvm2_backward'.
    fit : :func:`fit_mvm_model` result in twin units per unit amplitude fraction.
    w_max : the twin weight of full amplitude; ``gain = fit['gain'] * gain_scale / w_max``.
    held_out : dict with ``repeats`` (R, S, n_out) and ``predicted``, ``ideal`` (S, n_out),
        all in twin units.
    readout_noise : rms shot-to-shot scatter of one output (twin units).
    """
    rep = np.asarray(held_out["repeats"], float)
    pred = np.asarray(held_out["predicted"], float)
    ideal = np.asarray(held_out["ideal"], float)
    st = mvm_error_stats(rep, pred)
    st_ideal = mvm_error_stats(rep, ideal)
    gain = fit["gain"] * gain_scale / w_max
    gain_se = fit["gain_stderr"] * abs(gain_scale) / w_max
    q = {
        "w_max": Quantity(w_max, w_max_stderr, "twin weight"),
        "systematic_nrmse": Quantity(st["systematic_nrmse"], float("nan"), ""),
        "shot_to_shot_nrmse": Quantity(st["shot_to_shot_nrmse"], float("nan"), ""),
        "total_nrmse": Quantity(st["total_nrmse"], float("nan"), ""),
        "ideal_systematic_nrmse": Quantity(st_ideal["systematic_nrmse"], float("nan"), ""),
        "readout_noise": Quantity(readout_noise, float("nan"), "twin field units"),
    }
    n = rep.shape[1] * rep.shape[2]
    for key, val in (("systematic_nrmse", st["systematic_nrmse"]), ("ideal_systematic_nrmse",
                                                                     st_ideal["systematic_nrmse"])):
        # standard error of an rms over n values (chi distribution, large n)
        q[key] = Quantity(val, val / math.sqrt(2.0 * max(n - 1, 1)), "")
    s2s = st["shot_to_shot_nrmse"]
    q["shot_to_shot_nrmse"] = Quantity(s2s, s2s / math.sqrt(2.0 * max(n * (rep.shape[0] - 1) - 1, 1)), "")
    arrays = {"gain": gain, "gain_stderr": gain_se, "stray": fit["stray"], "stray_stderr": fit["stray_stderr"],
              "crosstalk": fit["crosstalk"], "crosstalk_stderr": fit["crosstalk_stderr"],
              "readout_noise": np.array([readout_noise])}
    meta = {"stats_vs_model": st, "stats_vs_ideal": st_ideal, "residual_rms": fit["residual_rms"],
            "dof": fit["dof"], "crosstalk_side": fit["side"], "x_label": "predicted (twin units)",
            "crosstalk_band": "full" if fit.get("band", None) is None else int(fit["band"]),
            "crosstalk_band_cv_rms": fit.get("band_cv_rms", {}),
            "y_label": "measured mean (twin units)",
            "definitions": "systematic_nrmse: held-out mean measurement vs the fitted model; "
                           "ideal_systematic_nrmse: vs the programmed W x; readout_noise: rms shot-to-shot "
                           "scatter per output (twin units)"}
    meta.update(info or {})
    order = np.argsort(pred.ravel())
    return Fit(name=name, model="C(G*W)x+s" if name != "mvm2_backward" else "t*((Gb*W)^T Cb^T d)+s",
               quantities=q, arrays=arrays, x=pred.ravel()[order], y=rep.mean(axis=0).ravel()[order],
               y_fit=pred.ravel()[order], info=meta)


# ============================================================================ measurement
_KIND_CODE = {"stray": 0, "onehot": 1, "fit": 2, "test": 3}


def _random_groups(rng, n_groups, per_group, amp_shape, x_shape, x_lo, x_hi):
    out = []
    for g in range(n_groups):
        a = rng.uniform(-1.0, 1.0, amp_shape)
        kind = "fit" if g % 2 == 0 else "test"
        for _ in range(per_group):
            out.append((kind, a, rng.uniform(x_lo, x_hi, x_shape)))
    return out


#: rows lit together in a one-hot step of a forward layer are this far apart: twice the widest
#: finite crosstalk band the fit considers (3) plus one, so every unlit output within that band
#: of a lit one sees a single lit element
ONEHOT_SPACING = 7


def _row_classes(n: int, spacing: int = ONEHOT_SPACING) -> list:
    m = max(1, min(int(spacing), int(n)))
    return [np.arange(c, n, m) for c in range(m)]


def mvm_plans(sizes, seed: int = 2308, n_groups: int = 8, per_group: int = 5, probe_amplitude: float = 1.0,
              spacing: int = ONEHOT_SPACING) -> dict:
    """Deterministic probe settings of the three MVMs (same seed -> same plan, so a resumed run
    measures exactly the settings that are missing).

    One-hot steps light one element per output spot, several spots at once: forward layers light
    column ``j`` of the panel (layer 1: input ``j`` alone; layer 2: hidden neuron ``j`` alone
    pumped) on every ``spacing``-th row (outputs ``spacing`` apart: each unlit output within the
    crosstalk band of a lit one sees one lit element); the backward path lights a whole row
    ``i`` of slm2 with the probe on one output ``m`` (every element reaches its own hidden
    spot, the probe crosstalk acts before the panel), so every element is measured with every probe.

    Returns dict name -> list of settings; each setting a dict with ``kind`` ('stray',
    'onehot', 'fit', 'test') and the frames' contents:
    mvm1: ``A1`` (n_h, n_in) amplitude fractions, ``x`` (n_in,) fills;
    mvm2: ``A1``, ``x`` (the pump), ``A2`` (n_out, n_h);
    mvm2_backward: ``A2``, ``u`` (n_out,) probe amplitude fractions (pump: every element full).
    """
    n_in, n_h, n_out = (int(s) for s in sizes)
    rng = np.random.default_rng(seed)
    p1 = [{"kind": "stray", "A1": np.zeros((n_h, n_in)), "x": np.zeros(n_in)}]
    for j in range(n_in):
        for rows in _row_classes(n_h, spacing):
            a = np.zeros((n_h, n_in))
            a[rows, j] = 1.0
            p1.append({"kind": "onehot", "A1": a, "x": np.eye(n_in)[j]})
    for kind, a, x in _random_groups(rng, n_groups, per_group, (n_h, n_in), n_in, 0.0, 1.0):
        p1.append({"kind": kind, "A1": a, "x": x})
    ones_pump = np.ones((n_h, n_in))
    p2 = [{"kind": "stray", "A1": ones_pump, "x": np.ones(n_in), "A2": np.zeros((n_out, n_h))}]
    for k in range(n_h):
        pump = np.zeros((n_h, n_in))
        pump[k] = 1.0
        for rows in _row_classes(n_out, spacing):
            a2 = np.zeros((n_out, n_h))
            a2[rows, k] = 1.0
            p2.append({"kind": "onehot", "A1": pump, "x": np.ones(n_in), "A2": a2})
    for g in range(n_groups):
        a2 = rng.uniform(-1.0, 1.0, (n_out, n_h))
        kind = "fit" if g % 2 == 0 else "test"
        for _ in range(per_group):
            p2.append({"kind": kind, "A1": rng.uniform(-1.0, 1.0, (n_h, n_in)), "x": rng.uniform(0.0, 1.0, n_in),
                       "A2": a2})
    pb = [{"kind": "stray", "A2": np.ones((n_out, n_h)), "u": np.zeros(n_out)}]
    for i in range(n_out):
        a2 = np.zeros((n_out, n_h))
        a2[i, :] = 1.0
        for m in range(n_out):
            pb.append({"kind": "onehot", "A2": a2, "u": probe_amplitude * np.eye(n_out)[m]})
    for kind, a2, u in _random_groups(rng, n_groups, per_group, (n_out, n_h), n_out, -probe_amplitude,
                                      probe_amplitude):
        pb.append({"kind": kind, "A2": a2, "u": u})
    return {"mvm1": p1, "mvm2": p2, "mvm2_backward": pb}


class _Panels:
    """Show frames only when they change (SLM settle times are the slow part of a real bench)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.last = {}

    def weights(self, name, amps):
        amps = np.asarray(amps, float)
        key = amps.tobytes()
        if self.last.get(name) != key:
            self.ctx.show(name, self.ctx.weight_levels(name, amps, 1.0))
            self.last[name] = key

    def frame(self, name, levels, key):
        if self.last.get(name) != key:
            self.ctx.show(name, levels)
            self.last[name] = key

    def inputs(self, x):
        x = np.asarray(x, float)
        key = x.tobytes()
        if self.last.get("input") != key:
            self.ctx.show_inputs(x)
            self.last["input"] = key


def _measure(ctx, name, plan, cams, repeats, setup, progress, fill: float = 0.7, dim=None, max_dim: int = 16):
    """Measure every step of ``plan``; returns (rows, store, keep).

    A step that clips a camera at the operating exposure (single elements at full pump are far
    brighter than the probes the exposure was chosen for) is measured again at a shorter
    exposure of that camera (:func:`calibration.procedures.exposure.find_exposure`: the
    brightest pixel at ``fill`` of the room); the factor (exposure used / operating one) is
    recorded with the step (meta ``k_<cam>``) and the powers in ``rows`` are divided by it
    (operating-exposure units: the camera is linear).  When even the shortest exposure clips
    and ``dim(step, level)`` is given (a step whose inputs the fit measures, so a weaker drive
    changes nothing but the light), the step is shown dimmer (``level`` halvings of its input,
    meta ``dim_level``) and measured again.  The next step of the same kind starts at the
    dimming and factors this one needed.  ``keep`` is False for steps that clipped even so
    (the step leaves the fit).
    """
    from calibration.procedures.absorber import StepStore, _progress, repeated_powers, saturated
    from calibration.procedures.exposure import find_exposure, frame_peaks, kept_exposures, saturation_room
    store = StepStore(ctx, name, cams)
    nominal = {c: float(ctx.bench.cameras[c].exposure_s) for c in cams}
    start = {}                          # (kind, cam) -> exposure factor to start the next step at
    start_dim = {}                      # kind -> dimming level to start the next step at
    rows, keep = [], []

    def attempt(st, level):
        if level:
            dim(st, level)
        for c in cams:
            ctx.set_exposure(c, nominal[c] * start.get((st["kind"], c), 1.0))
        peaks = {}
        p = repeated_powers(ctx, cams, repeats, peaks)
        clipped = [c for c in cams if peaks[c] >= ctx.saturation_adu(c)]
        if clipped:
            for c in clipped:
                find_exposure(ctx, c, lambda c=c: frame_peaks(ctx, [c], (0.0, math.pi))[c], fill=fill,
                              t_max=nominal[c])
            peaks = {}
            p = repeated_powers(ctx, cams, repeats, peaks)
        return p, peaks

    for idx, st in _progress(list(enumerate(plan)), len(plan), name, progress):
        got = store.get(idx)
        if got is None:
            setup(st)
            level = start_dim.get(st["kind"], 0) if dim is not None else 0
            with kept_exposures(ctx, cams):
                p, peaks = attempt(st, level)
                while dim is not None and saturated(ctx, peaks) and level < max_dim:
                    level += 1
                    p, peaks = attempt(st, level)
                k = {c: float(ctx.bench.cameras[c].exposure_s) / nominal[c] for c in cams}
            start_dim[st["kind"]] = level
            for c in cams:              # would this step clip at the operating exposure? then so will the next
                room, dark = saturation_room(ctx, c)
                at_one = (peaks[c] - dark) / k[c]
                start[(st["kind"], c)] = min(1.0, fill * room / at_one) if at_one >= 0.9 * room else 1.0
            got = store.save(idx, p, kind=_KIND_CODE[st["kind"]], sat=float(saturated(ctx, peaks)),
                             dim_level=level, **{f"k_{c}": k[c] for c in cams})
        factor = {c: store.meta(idx, f"k_{c}") or 1.0 for c in cams}
        rows.append({c: np.asarray(got[c]) / factor[c] for c in cams})
        keep.append(not store.meta(idx, "sat"))
    return rows, store, np.array(keep, dtype=bool)


def _unsaturated(plan, rows, keep, fit_name: str, notes: list):
    """The steps of ``plan``/``rows`` that did not saturate a camera (a note when some did)."""
    if keep.all():
        return plan, rows
    if keep.sum() < 0.5 * keep.size:
        raise ValueError(f"{fit_name}: {int((~keep).sum())} of {keep.size} steps saturated a camera even at its "
                         f"shortest exposure; lower the laser power and calibrate again")
    notes.append(f"{fit_name}: {int((~keep).sum())} of {keep.size} steps saturated a camera even at its shortest "
                 f"exposure and were left out; lower the laser power")
    return [st for st, k in zip(plan, keep) if k], [r for r, k in zip(rows, keep) if k]


def measure_mvm(ctx, *, repeats: int = 8, backward_repeats: int = 16, pump_repeats: int = 32, seed: int = 2308,
                n_groups: int = 8, per_group: int = 5, progress: bool = False) -> list:
    """Probe MVM-1, MVM-2 and MVM-2 backward and fit them: returns
    ``[mvm1, mvm2, mvm2_backward, scale]`` fits (see the module docs).

    Needs the readout, SLM and absorber fits (``absorber`` and ``scale`` with ``z1_per_h``,
    ``a1_per_h``) in ``ctx``.  Raw spot powers go to the streams ``mvm1.cam_z1``,
    ``mvm2.cam_a1``, ``mvm2.cam_out``, ``mvm2_backward.cam_back`` and ``mvm2_backward.pump``.
    """
    from calibration.absorber_fit import absorber_from_fit
    from calibration.procedures.exposure import backward_pump_fill, input_fills
    from calibration.procedures.absorber import (StepStore, boost_exposures, full_pump_levels, homodyne_of,
                                                 repeated_powers, saturated)

    for cam in ("cam_z1", "cam_a1", "cam_out", "cam_back"):
        ctx.need(f"readout.{cam}", "readout")
    absorber = ctx.need("absorber", "absorber")
    scale = ctx.need("scale", "absorber")
    bench = ctx.bench
    sizes = tuple(bench.sizes)
    n_in, n_h, n_out = sizes
    plans = mvm_plans(sizes, seed, n_groups, per_group)
    lo = {c: ctx.lo_amplitude(c) for c in ("cam_z1", "cam_a1", "cam_out", "cam_back")}
    z1_per_h = scale.quantities["z1_per_h"]
    a1_per_h = scale.quantities["a1_per_h"]
    panels = _Panels(ctx)
    ctx.blank_all()
    panels.frame("probe_input", ctx.zero_levels("probe_input"), "zero")

    # ---------------------------------------------------------------- MVM-1
    def setup1(st):
        panels.weights("slm1", st["A1"])
        panels.inputs(st["x"])
    notes = []
    with ctx.timed("mvm.measure_mvm1"):
        rows1, store1, keep1 = _measure(ctx, "mvm1", plans["mvm1"], ("cam_z1",), repeats, setup1, progress)
    plans["mvm1"], rows1 = _unsaturated(plans["mvm1"], rows1, keep1, "mvm1", notes)
    z1 = np.stack([homodyne_of(r["cam_z1"], lo["cam_z1"]) for r in rows1]) * z1_per_h.value   # (S, R, n_h)
    # fit against what the devices realised: the panels' transfer tables, the DMD's fill fractions
    _add_realised(ctx, plans)
    with ctx.timed("mvm.fit_mvm1"):
        fit1 = _fit_forward("mvm1", plans["mvm1"], "A1_real", "x_real", z1, None)

    # ---------------------------------------------------------------- MVM-2 forward
    def setup2(st):
        panels.weights("slm1", st["A1"])
        panels.inputs(st["x"])
        panels.weights("slm2", st["A2"])

    def dim2(st, level):
        """The MVM-2 input a1 is measured, so a clipping step may run at a weaker pump: its input
        fills halved ``level`` times (a uniform pump below one pixel per block on fewer inputs)."""
        x = np.asarray(st["x"], float)
        scale = 0.5 ** int(level)
        panels.inputs(input_fills(ctx, float(x[0]) * scale) if np.ptp(x) == 0 else x * scale)
    with ctx.timed("mvm.measure_mvm2"):
        rows2, store2, keep2 = _measure(ctx, "mvm2", plans["mvm2"], ("cam_a1", "cam_out"), repeats, setup2,
                                        progress, dim=dim2)
    plans["mvm2"], rows2 = _unsaturated(plans["mvm2"], rows2, keep2, "mvm2", notes)
    a1 = np.stack([homodyne_of(r["cam_a1"], lo["cam_a1"]) for r in rows2]) * a1_per_h.value     # (S, R, n_h)
    hout = np.stack([homodyne_of(r["cam_out"], lo["cam_out"]) for r in rows2])                 # (S, R, n_out)
    a1_mean = a1.mean(axis=1)
    with ctx.timed("mvm.fit_mvm2"):
        raw2 = _fit_forward("mvm2", plans["mvm2"], "A2_real", None, hout, a1_mean, finish=False)
    hmax = raw2["fit"]["gain"]
    kmax = np.unravel_index(np.argmax(np.abs(hmax)), hmax.shape)
    z2_per_h = 1.0 / abs(hmax[kmax])
    z2_rel = math.hypot(raw2["fit"]["gain_stderr"][kmax] / abs(hmax[kmax]), a1_per_h.stderr / a1_per_h.value)
    fit2 = _finish_forward("mvm2", raw2, unit=z2_per_h, w_max=1.0, w_max_stderr=0.0,
                           info={"w_max_convention": "z2_per_h makes w_max = 1 (the best element at full "
                                                      "amplitude maps a1 = 1 to z2 = 1)"})

    # ---------------------------------------------------------------- MVM-2 backward
    pstore = StepStore(ctx, "mvm2_backward", ("pump",))
    pump_levels = full_pump_levels(ctx)
    pump_inputs = input_fills(ctx, backward_pump_fill(ctx))

    def pump_z1(step):
        """z1 homodyne of the pump (operating-exposure units); measured at a shorter
        exposure when the operating one would clip the brightest spots."""
        got = pstore.get(step)
        if got is None:
            panels.frame("slm1", pump_levels, "full")
            panels.inputs(pump_inputs)
            panels.frame("probe_input", ctx.zero_levels("probe_input"), "zero")
            nominal = float(bench.cameras["cam_z1"].exposure_s)
            try:
                k = boost_exposures(ctx, ("cam_z1",), ctx.zero_levels("probe_input"), k_max=1.0,
                                    inputs=pump_inputs)["cam_z1"]
                peaks = {}
                got = pstore.save(step, {"pump": repeated_powers(ctx, ("cam_z1",), pump_repeats, peaks)["cam_z1"]},
                                  k_z1=k, sat=float(saturated(ctx, peaks)))
            finally:
                ctx.set_exposure("cam_z1", nominal)
        if pstore.meta(step, "sat"):
            notes.append("mvm2_backward: the pump saturated cam_z1 even at the shortest exposure; the "
                         "probe transmission at the pump is uncertain")
        return homodyne_of(got["pump"], lo["cam_z1"]) / (pstore.meta(step, "k_z1") or 1.0)

    zp_start = pump_z1(0)

    def setupb(st):
        panels.frame("slm1", pump_levels, "full")
        panels.inputs(pump_inputs)
        panels.weights("slm2", st["A2"])
        u = np.asarray(st["u"], float)
        panels.frame("probe_input", ctx.weight_levels("probe_input", u[None, :], 1.0), ("u", u.tobytes()))
    with ctx.timed("mvm.measure_mvm2_backward"):
        rowsb, storeb, keepb = _measure(ctx, "mvm2_backward", plans["mvm2_backward"], ("cam_back",),
                                        backward_repeats, setupb, progress)
    plans["mvm2_backward"], rowsb = _unsaturated(plans["mvm2_backward"], rowsb, keepb, "mvm2_backward", notes)
    zp_end = pump_z1(1)
    zp = np.concatenate([zp_start, zp_end]) * z1_per_h.value            # (2 R, n_h)
    twin_absorber = absorber_from_fit(absorber)
    t = twin_absorber.probe(zp.mean(axis=0))                              # (n_h,)
    hb = np.stack([homodyne_of(r["cam_back"], lo["cam_back"]) for r in rowsb])   # (S, R, n_h)
    with ctx.timed("mvm.fit_mvm2_backward"):
        fitb = _fit_backward(plans["mvm2_backward"], hb, t, fit2)
    ctx.blank_all()

    q = dict(scale.quantities)
    q["z2_per_h"] = Quantity(z2_per_h, z2_per_h * z2_rel, "twin field per homodyne unit (cam_out)")
    q["delta1_per_h"] = fitb.info.pop("_delta1_per_h")
    new_scale = Fit(name="scale", model=scale.model, quantities=q,
                    info={**scale.info, "z2_from": "mvm2: w_max(mvm2) = 1",
                          "delta1_from": "mvm2_backward: backward realised matrix = forward one in least squares"})
    for f, st, keep in ((fit1, store1, keep1), (fit2, store2, keep2), (fitb, storeb, keepb)):
        f.info["steps_reused"] = st.n_reused
        f.info["steps_measured"] = st.n_measured
        f.info["steps_saturated"] = int((~keep).sum())
        mine = [n for n in notes if n.startswith(f.name + ":")]
        if mine:
            f.info["warnings"] = list(f.info.get("warnings", [])) + mine
    fitb.info["pump_z1_twin"] = zp.mean(axis=0).tolist()
    fitb.info["probe_t"] = t.tolist()
    ctx.add(fit1, fit2, fitb, new_scale)
    return [fit1, fit2, fitb, new_scale]


def _add_realised(ctx, plans) -> None:
    """Add the realised amplitudes (``A1_real``, ``A2_real``, ``u_real``) and inputs (``x_real``)
    to every step of the plans (programmed values stay under their own keys)."""
    for st in plans["mvm1"] + plans["mvm2"] + plans["mvm2_backward"]:
        if "A1" in st:
            st["A1_real"] = ctx.realised_amplitudes("slm1", st["A1"])
        if "x" in st:
            st["x_real"] = ctx.realised_inputs(st["x"])
        if "A2" in st:
            st["A2_real"] = ctx.realised_amplitudes("slm2", st["A2"])
        if "u" in st:
            st["u_real"] = ctx.realised_amplitudes("probe_input", st["u"])


def _split(plan):
    kinds = np.array([st["kind"] for st in plan])
    return np.flatnonzero(kinds != "test"), np.flatnonzero(kinds == "test")


def _fit_forward(name, plan, amp_key, x_key, y, x_measured, finish=True):
    """Fit one forward MVM; ``y`` (S, R, n_out) in output units, inputs from the plan or measured."""
    amps = np.stack([st[amp_key] for st in plan])
    x = np.stack([st[x_key] for st in plan]) if x_key is not None else np.asarray(x_measured, float)
    tr, te = _split(plan)
    ym = y.mean(axis=1)
    fit = fit_mvm_selected(x[tr], amps[tr], ym[tr])
    programmed = np.stack([st[amp_key.replace("_real", "")] for st in plan])
    raw = {"fit": fit, "amps": amps, "programmed": programmed, "x": x, "y": y, "test": te}
    if not finish:
        return raw
    g = fit["gain"]
    kmax = np.unravel_index(np.argmax(np.abs(g)), g.shape)
    w_max = float(abs(g[kmax]))
    return _finish_forward(name, raw, unit=1.0, w_max=w_max, w_max_stderr=float(fit["gain_stderr"][kmax]),
                           info={"w_max_convention": "largest |realised element| at full amplitude "
                                                     "(max |gain| = 1)"})


def _finish_forward(name, raw, *, unit, w_max, w_max_stderr, info):
    fit = dict(raw["fit"])
    for key in ("gain", "gain_stderr", "stray", "stray_stderr"):
        fit[key] = fit[key] * unit
    fit["residual_rms"] = fit["residual_rms"] * unit
    y = raw["y"] * unit
    te = raw["test"]
    pred = predict_mvm(raw["x"][te], raw["amps"][te], fit["gain"], fit["crosstalk"], fit["stray"])
    ideal = np.einsum("sij,sj->si", raw["programmed"][te] * w_max, raw["x"][te])
    noise = float(np.sqrt(np.mean(np.var(y, axis=1, ddof=1))))
    return mvm_fit_record(name, fit, w_max=w_max, w_max_stderr=w_max_stderr,
                          held_out={"repeats": np.moveaxis(y[te], 1, 0), "predicted": pred, "ideal": ideal},
                          readout_noise=noise, info={**info, "n_fit_probes": int(y.shape[0] - te.size),
                                                     "n_test_probes": int(te.size), "repeats": int(y.shape[1])})


def _fit_backward(plan, hb, t, fwd: Fit) -> Fit:
    """Backward MVM: ``h_back = t * ((Gb' * A2^T) (R u)) + s`` in cam_back units, then twin units."""
    a2 = np.stack([st["A2_real"] for st in plan])                # (S, n_out, n_h)
    u = np.stack([st["u_real"] for st in plan])                  # (S, n_out)
    amps = np.transpose(a2, (0, 2, 1))                           # (S, n_h, n_out)
    S = len(plan)
    F = np.broadcast_to(np.asarray(t, float), (S, t.size))
    tr, te = _split(plan)
    ym = hb.mean(axis=1)
    fit = fit_mvm_selected(u[tr], amps[tr], ym[tr], side="input", factor=F[tr])
    hb_gain = fit["gain"].T                                      # (n_out, n_h): h_back per unit probe
    fwd_real = fwd.arrays["gain"] * fwd.quantities["w_max"].value
    den = float(np.sum(hb_gain ** 2))
    delta = float(np.sum(fwd_real * hb_gain) / den)
    dev = fwd_real - delta * hb_gain
    delta_se = math.sqrt(float(np.sum(dev ** 2)) / max(dev.size - 1, 1) / den) if dev.size > 1 else float("nan")
    w_max2 = fwd.quantities["w_max"].value
    rec = {"gain": delta * hb_gain, "gain_stderr": abs(delta) * fit["gain_stderr"].T,
           "crosstalk": fit["crosstalk"].T, "crosstalk_stderr": fit["crosstalk_stderr"].T,
           "stray": delta * fit["stray"], "stray_stderr": abs(delta) * fit["stray_stderr"],
           "residual_rms": abs(delta) * fit["residual_rms"], "dof": fit["dof"], "side": "backward (input of W^T)",
           "band": fit["band"], "band_cv_rms": fit["band_cv_rms"]}
    y = hb * delta
    pred = delta * predict_mvm(u[te], amps[te], fit["gain"], fit["crosstalk"], fit["stray"], side="input",
                               factor=F[te])
    programmed = np.transpose(np.stack([st["A2"] for st in plan]), (0, 2, 1))
    u_programmed = np.stack([st["u"] for st in plan])
    ideal = F[te] * np.einsum("sij,sj->si", programmed[te] * w_max2, u_programmed[te])
    noise = float(np.sqrt(np.mean(np.var(y, axis=1, ddof=1))))
    out = mvm_fit_record("mvm2_backward", rec, w_max=w_max2, w_max_stderr=fwd.quantities["w_max"].stderr,
                         held_out={"repeats": np.moveaxis(y[te], 1, 0), "predicted": pred, "ideal": ideal},
                         readout_noise=noise,
                         info={"n_fit_probes": int(S - te.size), "n_test_probes": int(te.size),
                               "repeats": int(hb.shape[1]),
                               "model_detail": "delta1 = t(z1) * ((gain*W2)^T crosstalk^T delta2) + stray, "
                                               "t from the absorber fit's probe law at the measured pump",
                               "delta1_convention": "delta1_per_h makes gain*w_max match mvm2's in least squares",
                               "gain_ratio_to_forward": (delta * hb_gain / np.where(fwd_real != 0, fwd_real, np.nan)
                                                         ).tolist()})
    out.quantities["reciprocity_rms"] = Quantity(float(np.sqrt(np.mean(dev ** 2)) / max(np.sqrt(np.mean(
        fwd_real ** 2)), 1e-300)), float("nan"), "")
    out.info["_delta1_per_h"] = Quantity(delta, delta_se, "twin field per homodyne unit (cam_back)")
    return out
