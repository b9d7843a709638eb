"""MVM fits: gains, crosstalk and stray field of the three matrix-vector multipliers.

Model (twin units, :class:`twin.layers.OpticalLinear`)::

    forward:   y = C (G * W) x + s                      C: output crosstalk, diag(C) = 1
    backward:  d1 = t(z1) * ((Gb * W2)^T Cb^T d2) + sb   (the probe retraces layer 2)

``W`` is the programmed matrix in twin units; the encoder shows the amplitude fraction
``A = W / w_max`` on the SLM, so at full amplitude an element realises ``G_ij * w_max``.
:func:`fit_mvm_model` fits ``y = F * (L (G * A) R x) + s`` by alternating linear solves;
:func:`fit_mvm_selected` chooses the crosstalk band by cross-validation; :func:`mvm_fit_record`
assembles the contract's Fit.  The probes are measured by
:func:`calibration.procedures.mvm.measure_mvm`; :mod:`calibration.mvm_layers_fit` turns its
plain arrays into the three MVM fits.

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

__all__ = ["predict_mvm", "fit_mvm_model", "fit_mvm_selected", "mvm_fit_record", "DENSE_MAX_PARAMS"]


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
    (``side='output'``) or ``diag(R) = 1`` (``side='input'``).  Gains and stray are solved with
    the mixing fixed, then the mixing and stray with the gains fixed, until the residual sum of
    squares changes by less than ``tol`` (relative); a last gain solve with the final mixing.

    Parameters
    ----------
    x : (S, n_in) array_like
        Inputs (twin units).
    amps : (S, n_out, n_in) array_like
        Programmed matrices (amplitude fractions or twin weights).
    y : (S, n_out) array_like
        Outputs (twin or homodyne units).
    side : {'output', 'input'}
        Where the crosstalk acts.
    factor : (S, n_out) array_like, optional
        Known multiplier per sample and output (dimensionless).
    crosstalk : bool
        Fit the crosstalk (else identity).
    gain0 : (n_out, n_in) array_like, optional
        Starting gains (output units per input unit per unit amplitude).
    n_iter : int
        Alternations at most.
    tol : float
        Relative change of the residual sum of squares that ends the alternation.
    band : int, optional
        Free crosstalk elements only within ``|i - k| <= band`` of the diagonal (None: every
        element; the finite aperture couples neighbouring rows, so a narrow band avoids fitting
        noise into hundreds of far elements; see :func:`fit_mvm_selected`).

    Returns
    -------
    dict
        ``gain``, ``gain_stderr`` (n_out, n_in; output units per input unit), ``crosstalk``,
        ``crosstalk_stderr`` (dimensionless), ``stray``, ``stray_stderr`` (output units),
        ``residual_rms`` (output units), ``dof``, ``iterations``, ``side``, ``n_params``, ``band``.
    """
    x, a, y = _checked(x, amps, y, side)
    S, n_out, n_in = a.shape
    F = np.ones((S, n_out)) if factor is None else np.asarray(factor, float)
    n_mix = n_out if side == "output" else n_in
    mix = np.eye(n_mix)
    gain = np.ones((n_out, n_in)) if gain0 is None else np.array(gain0, float)
    stray = np.zeros(n_out)
    off = _free_mixing(n_mix, band)
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
    gain, stray, mix, g_design, it = _alternate(x, a, y, F, (gain, stray, mix), off, side, crosstalk, rows, solver,
                                                n_iter, tol)
    r = y - predict_mvm(x, a, gain, mix if crosstalk else None, stray, side=side, factor=F)
    dof = max(S * n_out - p_g - p_c, 1)
    sigma2 = float(np.sum(r ** 2)) / dof
    gain_se, stray_se, mix_se = _mvm_stderr(x, a, y, F, mix, side, gain, stray, off, crosstalk, rows, g_design,
                                            sigma2)
    return {"gain": gain, "gain_stderr": gain_se, "crosstalk": mix, "crosstalk_stderr": mix_se,
            "stray": stray, "stray_stderr": stray_se, "residual_rms": math.sqrt(sigma2), "dof": dof,
            "iterations": it, "side": side, "n_params": p_g + p_c, "band": band}


def _alternate(x, a, y, F, start, off, side, crosstalk, rows, solver, n_iter, tol):
    """The alternating solves of :func:`fit_mvm_model` from ``start = (gain, stray, mix)``, then a
    last gain solve with the final mixing: (gain, stray, mix, dense design or None, iterations)."""
    S, n_out, n_in = a.shape
    gain, stray, mix = start
    g_design = None
    it = 0
    prev = np.inf
    for it in range(1, n_iter + 1):
        # -- gains and stray, mixing fixed
        if rows:
            gain, stray = _solve_rows(x, a, y, F, mix, side, solver)
        else:
            g_design = _dense_design(x, a, F, mix, side)
            gain, stray = _dense_solve(g_design, y, n_out, n_in)
        if not crosstalk:
            break
        # -- mixing and stray, gains fixed
        if side == "output":
            u = _apply(a * gain, x)                                # (S, n_out) before mixing
            mix, stray = _mixing_rows(u, y, F, off, stray)
        else:
            mix, stray = _input_mixing(x, a, y, F, gain, off)
        r = y - predict_mvm(x, a, gain, mix, stray, side=side, factor=F)
        rss = float(np.sum(r ** 2))
        if abs(prev - rss) <= tol * max(rss, 1e-300):
            break
        prev = rss
    # final linear solve for gains with the final mixing (consistent stray), then uncertainties
    if crosstalk and rows:
        gain, stray = _solve_rows(x, a, y, F, mix, side, solver)
    elif crosstalk:
        g_design = _dense_design(x, a, F, mix, side)
        gain, stray = _dense_solve(g_design, y, n_out, n_in)
    return gain, stray, mix, g_design, it


def _checked(x, amps, y, side):
    """``x``, ``amps``, ``y`` as float arrays, with consistent shapes and finite values."""
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
    return x, a, y


def _free_mixing(n_mix: int, band) -> np.ndarray:
    """(n_mix, n_mix) bool: the free (off-diagonal, within ``band``) crosstalk elements."""
    off = ~np.eye(n_mix, dtype=bool)
    if band is not None:
        if band < 0:
            raise ValueError(f"band must be >= 0 (or None for a full crosstalk matrix), got {band}")
        idx = np.arange(n_mix)
        off &= np.abs(idx[:, None] - idx[None, :]) <= band
    return off


def _dense_design(x, a, F, mix, side):
    """Design (S n_out, n_out n_in + n_out) of the joint gain-and-stray solve with the mixing fixed."""
    S, n_out, n_in = a.shape
    eye_out = np.eye(n_out)
    if side == "output":
        coef = np.einsum("si,ik,skj,sj->sikj", F, mix, a, x)
    else:
        coef = np.einsum("si,sij,sj->sij", F, a, x @ mix.T)
        coef = np.einsum("sij,ik->sikj", coef, eye_out)
    return np.concatenate([coef.reshape(S * n_out, n_out * n_in), np.tile(eye_out, (S, 1))], axis=1)


def _dense_solve(design, y, n_out: int, n_in: int):
    """Gains (n_out, n_in) and stray (n_out,) from the joint design of :func:`_dense_design`."""
    sol = _lstsq(design, y.ravel())
    return sol[:n_out * n_in].reshape(n_out, n_in), sol[n_out * n_in:]


def _input_mixing_design(x, a, F, gain, off):
    """(pairs, design) of the input-side mixing-and-stray solve with the gains fixed."""
    S, n_out, n_in = a.shape
    m = a * gain                                           # (S, n_out, n_in)
    pairs = [(j, q) for j in range(n_in) for q in range(n_in) if off[j, q]]
    cols = [(F * m[:, :, j] * x[:, q, None]).ravel() for j, q in pairs]
    return pairs, np.concatenate([np.stack(cols, 1), np.tile(np.eye(n_out), (S, 1))], axis=1)


def _input_mixing(x, a, y, F, gain, off):
    """Input-side mixing (n_in, n_in) and stray with the gains fixed."""
    n_in = a.shape[2]
    pairs, design_c = _input_mixing_design(x, a, F, gain, off)
    base = F * _apply(a * gain, x)
    sol_c = _lstsq(design_c, (y - base).ravel())
    new = np.eye(n_in)
    for (j, q), val in zip(pairs, sol_c[:len(pairs)]):
        new[j, q] = val
    return new, sol_c[len(pairs):]


def _mvm_stderr(x, a, y, F, mix, side, gain, stray, off, crosstalk, rows, g_design, sigma2):
    """Standard errors (gain, stray, mixing) of a :func:`fit_mvm_model` solution."""
    if rows:
        gain_se, stray_se = _rows_se(x, a, F, mix, side, sigma2)
    else:
        n_out, n_in = gain.shape
        g_se = _param_se(g_design, sigma2)
        gain_se = g_se[:n_out * n_in].reshape(n_out, n_in)
        stray_se = g_se[n_out * n_in:]
    mix_se = np.zeros_like(mix)
    if crosstalk:
        if side == "output":
            u = _apply(a * gain, x)
            mix_se = _mixing_rows(u, y, F, off, stray.copy(), sigma2=sigma2)
        else:
            pairs, design_c = _input_mixing_design(x, a, F, gain, off)
            for (j, q), val in zip(pairs, _param_se(design_c, sigma2)[:len(pairs)]):
                mix_se[j, q] = val
    return gain_se, stray_se, mix_se


def fit_mvm_selected(x, amps, y, *, side: str = "output", factor=None, bands=(0, 1, 2, 3, None),
                     n_folds: int = 5) -> dict:
    """:func:`fit_mvm_model` with the crosstalk band chosen by ``n_folds``-fold cross-validation
    (the band whose fits predict the left-out probes best).

    Parameters
    ----------
    x, amps, y, side, factor
        As for :func:`fit_mvm_model` (inputs, programmed matrices, outputs in output units).
    bands : sequence of int or None
        Candidate crosstalk bands (None: the full matrix).
    n_folds : int
        Cross-validation folds.

    Returns
    -------
    dict
        The :func:`fit_mvm_model` result at the chosen ``band``, plus ``band_cv_rms``
        ({band: rms prediction error of the left-out probes, output units}).
    """
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
    name : str
        'mvm1', 'mvm2' or 'mvm2_backward'.
    fit : dict
        :func:`fit_mvm_model` result in twin units per unit amplitude fraction.
    w_max, w_max_stderr : float
        The twin weight of full amplitude and its standard error; ``gain = fit['gain'] *
        gain_scale / w_max``.
    held_out : dict
        ``repeats`` (R, S, n_out) and ``predicted``, ``ideal`` (S, n_out), all in twin units.
    readout_noise : float
        Rms shot-to-shot scatter of one output (twin units).
    info : dict, optional
        Extra info entries.
    gain_scale : float
        Factor on the gains.

    Returns
    -------
    Fit
        Quantities ``w_max`` (twin weight), ``systematic_nrmse``, ``ideal_systematic_nrmse``,
        ``shot_to_shot_nrmse``, ``total_nrmse`` (dimensionless), ``readout_noise`` (twin units);
        arrays ``gain`` (dimensionless), ``stray`` (twin units), ``crosstalk`` and their errors.
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
