"""From the recorded homodyne repeats of an absorber sweep to the absorber fit.

:func:`reduce_absorber` takes plain arrays (per step and neuron, the repeats of the homodyne
values of ``cam_z1`` before the cell, ``cam_a1`` after it, and ``cam_back`` with the backward
probe off and on), forms the pump curve ``P_in = h_z1^2``, ``P_out = h_a1^2`` (the mean's square
minus its variance, so noise does not bias weak points) and the probe's transmission, aligns
the neurons model-free (:func:`calibration.absorber_spot_fit.neuron_scales`), fits the pooled
curves (:func:`calibration.absorber_spot_fit.analyse_absorber`) and then every neuron jointly
(:func:`calibration.absorber_joint_fit.select_law_jointly`).
"""
from __future__ import annotations

import numpy as np

from calibration.absorber_joint_fit import NeuronSweeps, select_law_jointly
from calibration.absorber_spot_fit import analyse_absorber, neuron_scales
from calibration.quantities import Fit

__all__ = ["reduce_absorber"]


def reduce_absorber(h: dict, counts, times_s=None, *, probe_amplitude: float = float("nan"),
                    spot_models: bool = True, saturated=None) -> Fit:
    """Homodyne repeats of the sweeps -> pump/probe curves -> the absorber fit.

    The laws are compared by :func:`select_law_jointly` (every neuron's own scales, alpha0
    drifting in time); the pooled, aligned data (:func:`calibration.absorber_spot_fit.neuron_scales`,
    :func:`calibration.absorber_spot_fit.analyse_absorber`) start those fits and give the
    fallback.

    Parameters
    ----------
    h : dict
        Part -> list over steps of (repeats, n_neurons) homodyne values (square root of camera
        power units), parts ``cam_z1``, ``cam_a1``, ``back_off``, ``back_on`` and optionally
        ``z1_quadrature`` (the pump-off steps' quadrature of z1).
    counts : (n_steps,) array_like of int
        DMD pixels on per input block at each step (0 = pump off).
    times_s : (n_steps,) array_like, optional
        Bench-clock time of every step (s); enables the alpha0 drift term.
    probe_amplitude : float
        The probe's amplitude fraction (recorded in ``info``).
    spot_models : bool
        Also try the spot-averaged laws.
    saturated : (n_steps, 2) array_like of bool, optional
        A camera saturated during the step's pump readout (cam_z1/cam_a1; the step leaves the
        pump and probe fits) or its probe readout (cam_back; the step leaves the probe fit).
        Clipped pixels bend the curves exactly where saturation of the cell shapes them.

    Returns
    -------
    Fit
        Named 'absorber' (see :func:`select_law_jointly`), ``i_sat`` in ``h_z1^2`` units, info
        ``saturation_reached`` (strongest pump / i_sat), neuron scales and the sweep's times.
    """
    counts = np.asarray(counts)
    mz, vz = _mean_var(h, "cam_z1")
    ma, va = _mean_var(h, "cam_a1")
    mb_off, vb_off = _mean_var(h, "back_off")
    mb_on, vb_on = _mean_var(h, "back_on")
    p_in_raw = mz ** 2 - vz
    p_out_raw = ma ** 2 - va
    im2 = _quadrature_power(h, mz.shape[1])
    on = counts > 0
    sat = np.zeros((counts.size, 2), dtype=bool) if saturated is None else np.asarray(saturated, dtype=bool)
    if sat.shape != (counts.size, 2):
        raise ValueError(f"saturated must have shape ({counts.size}, 2), got {sat.shape}")
    warnings = _saturation_warnings(sat, on)
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
    probe_x, probe_y, r_probe = _aligned_probe(pr, pr_se, p_in, usable, sat, warnings)
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
    data = _neuron_sweeps(p_in_raw, p_out_raw, (mz, vz), (ma, va), usable, t_h, im2)
    fit = select_law_jointly(data, pooled, probe_x, probe_y, spot_models=spot_models)
    _describe_sweep(fit, x, probe_x, usable, times_s, warnings, {
        "probe_amplitude": probe_amplitude, "probe_pump_off_snr": ref_snr.tolist(),
        "neuron_probe_scales": None if r_probe is None else r_probe.tolist(), "z1_quadrature_power": im2.tolist(),
        "x_label": "P_in = h_z1^2 / q_k (aligned)", "y_label": "P_out = h_a1^2 / r_k (aligned)"})
    fit.info["warnings"] = fit.info.get("warnings", []) + warnings
    return fit


def _neuron_sweeps(p_in_raw, p_out_raw, z1, a1, usable, t_h, im2) -> NeuronSweeps:
    """The usable points of every neuron with their variances (from the means ``m`` and the
    variances ``v`` of the means, ``z1 = (m, v)`` and ``a1 = (m, v)``), times and quadratures."""
    (mz, vz), (ma, va) = z1, a1
    step_idx, neuron_idx = np.nonzero(usable)
    return NeuronSweeps(p_in=p_in_raw[usable], p_out=p_out_raw[usable],
                        var_in=(4.0 * mz ** 2 * vz + 2.0 * vz ** 2)[usable],
                        var_out=(4.0 * ma ** 2 * va + 2.0 * va ** 2)[usable],
                        neuron=neuron_idx, t_h=t_h[step_idx], n_neurons=mz.shape[1], im2=im2[neuron_idx],
                        step=step_idx)


def _mean_var(h: dict, part: str):
    """Per-step means (n_steps, n_neurons) of ``h[part]`` and the variances of those means."""
    arr = [np.asarray(a, float) for a in h[part]]
    m = np.stack([a.mean(axis=0) for a in arr])
    v = np.stack([a.var(axis=0, ddof=1) / a.shape[0] if a.shape[0] > 1 else np.zeros(a.shape[1])
                  for a in arr])
    return m, v


def _quadrature_power(h: dict, n_neurons: int) -> np.ndarray:
    """The squared quadrature of z1 (stray light) per neuron: the cell saturates on
    ``|z1|^2 = Re^2 + Im^2``, the homodyne reads the real part (zeros when not measured)."""
    im2 = np.zeros(n_neurons)
    if h.get("z1_quadrature"):
        qa = np.concatenate([np.asarray(a, float) for a in h["z1_quadrature"]])
        im2 = np.maximum(qa.mean(axis=0) ** 2 - qa.var(axis=0, ddof=1) / qa.shape[0], 0.0)
    return im2


def _saturation_warnings(sat: np.ndarray, on: np.ndarray) -> list:
    """Notes on the pump (``sat[:, 0]``) and probe (``sat[:, 1]``) steps that saturated a camera."""
    warnings = []
    if sat[on, 0].any():
        warnings.append(f"{int(sat[on, 0].sum())} of {int(on.sum())} pump steps saturated cam_z1 or cam_a1 and "
                        "were left out (clipped even at the sweep's shortest exposure); lower the laser power to "
                        "keep the strongest pumps")
    if sat[on, 1].any():
        warnings.append(f"{int(sat[on, 1].sum())} of {int(on.sum())} probe steps saturated cam_back and were "
                        "left out of the probe fit")
    return warnings


def _aligned_probe(pr, pr_se, p_in, usable, sat, warnings: list):
    """(probe_x, probe_y, r_probe): the probe's power transmission against the aligned pump,
    every neuron's unknown probe amplitude divided out model-free (None when too weak)."""
    sign = np.sign(pr[usable.any(axis=1)].sum(axis=0))
    sign[sign == 0] = 1.0
    prs = pr * sign
    good = usable & ~sat[:, 1:] & (prs > 3.0 * pr_se)
    if not np.all(good.sum(axis=0) >= 3):
        warnings.append("the probe signal is below 3 standard errors at most pump levels for some neuron; the "
                        "probe sweep was not fitted (raise probe_amplitude or probe_repeats)")
        return None, None, None
    r_probe, _ = neuron_scales(p_in, prs, pr_se, good, shift=False)
    t_amp = prs / r_probe
    t_amp = t_amp / np.median(t_amp[good])
    keep = usable & ~sat[:, 1:] & np.isfinite(t_amp)
    return p_in[keep], np.sign(t_amp[keep]) * t_amp[keep] ** 2, r_probe


def _describe_sweep(fit: Fit, x, probe_x, usable, times_s, warnings: list, extra: dict) -> None:
    """Add the pump range reached, the point counts, ``extra`` and the sweep's times to ``fit.info``."""
    i_sat = fit.quantities["i_sat"].value
    s_max = float(np.max(fit.x) / i_sat) if fit.x is not None else float(x.max() / i_sat)
    fit.info["saturation_reached"] = s_max
    fit.info["weakest_pump_s"] = float(np.min(fit.x) / i_sat) if fit.x is not None else float(x.min() / i_sat)
    fit.info["pump_points"] = int(x.size)
    fit.info["probe_points"] = 0 if probe_x is None else int(probe_x.size)
    fit.info.update(extra)
    if times_s is not None:
        fit.info["sweep_time_s"] = [float(np.min(times_s)), float(np.max(times_s))]
        fit.info["alpha0_at_s"] = 0.5 * float(np.asarray(times_s)[usable.any(axis=1)].min()
                                              + np.asarray(times_s)[usable.any(axis=1)].max())
    if s_max < 10:
        warnings.append(f"the pump reached only {s_max:.3g} x i_sat: the law and alpha0 are weakly determined "
                        "(alpha0 trades off against the background transmission); raise the pump power "
                        "(laser, layer-1 gain) to reach >= 30 x i_sat")
