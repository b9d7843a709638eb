"""SLM calibration through the bench: phase response (two methods), pixel crosstalk, illumination.

Each phase panel is read on the camera that sees its elements first:

=============  ==========  ==========================================================
panel          camera      other devices (held fixed while the panel changes)
=============  ==========  ==========================================================
slm1           cam_z1      inputs on, slm2 and probe_input at zero field
slm2           cam_out     inputs on, slm1 uniform level 0 (every element full, phase 0)
probe_input    cam_back    inputs on (bleaching the cell), slm1 and slm2 uniform level 0
=============  ==========  ==========================================================

Spot fields are complex homodyne values from the LO phases 0, pi/2, pi, 3 pi/2
(:meth:`CalContext.field_iq`).  The input amplitude is halved until no frame saturates, down
to one DMD pixel per block and then on fewer inputs down to a single pixel; beyond that the
panel's camera runs at a shorter exposure (a
quarter at a time) for this panel's measurements, restored afterwards.  Phases, crosstalk
ratios and relative illumination do not depend on the exposure; the diffractive method's LO
and background powers (readout fit, measured at the readout's exposure) are scaled to it.

Phase response
--------------
(a) interferometric (the result used for the LUT): the whole panel uniform at level g.  Every
    element then carries ``exp(i phi(g))`` (a uniform field is unchanged by the crosstalk
    blur), so each spot traces a circle ``E_k(g) = A_k exp(i phi(g)) + B_k`` (B: stray light,
    unchanged).  A circle fit per spot gives B_k; ``phi(g) = arg((E_k(g) - B_k) / (E_k(0) -
    B_k))``, unwrapped over g and averaged over spots (weights |A_k|^2 / noise), with a
    standard error from the circle residuals;
    :func:`calibration.interference_fit.fit_interferometric_response`.
(b) diffractive: the panel holds a binary grating of levels 0 and g (columns alternating,
    period 2 px).  The zero order, which the summing optics keep, has power
    ``A cos^2(phi(g)/2) + B`` (power = LO-averaged spot power minus the LO power and the
    background); :func:`calibration.slm_phase_fit.fit_diffractive_response` with ``order='zero'``.
    Its rms difference from (a) is reported (``info['diffractive_vs_interferometric_rms_rad']``).

Crosstalk
---------
The fringing field blurs the complex pixel field with a Gaussian of sigma ``crosstalk_px``;
the zero order of a block (the mean over its active pixels) only changes where field leaks
across the block's edges.  With the calibrated LUT the panel shows patterns P (active pixels
at phase 0 and the rest at pi; checkerboard 0/pi inside blocks; stripes of period 4 inside
blocks; active at 0 and the rest at pi/2), a uniform frame U and the zero-field frame Z; the
measured ratios ``(E_P - E_Z) / (E_U - E_Z)`` (stray light cancels) are fitted with the
forward model :func:`hwio.encoding.realised_weights` (same blur, the fitted response) for
sigma (:func:`calibration.crosstalk_fit.fit_zero_order_crosstalk`).  The standard error is the larger of the fit's and the scatter of sigma fitted to each
pattern alone (a model-consistency check).

Illumination
------------
One element at a time at full amplitude (the rest at zero field): slm1 element (i, j) with
only input j on gives cam_z1 spot i ``k1 illum_ij``; slm2 element (i, j) gives cam_out spot i
``k2 illum_ij a1_j``, divided by a1_j measured on cam_a1 in the same frames;
:func:`calibration.illumination_fit.fit_panel_illumination` at the block centres in fractions of the layout
extent (1/e field radius ``illumination_waist``), weighted with the scatter of repeated
measurements plus a 0.3 % systematic error per spot (``SPOT_SYSTEMATIC``: the per-spot readout
calibration).  probe_input (one row, too few elements for
a 2-D fit): relative element amplitudes from the backward field at cam_back spot j with
slm2 element (i, j) alone, divided by the forward field of that element -> array
``illumination_map`` only.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.crosstalk_fit import fit_zero_order_crosstalk
from calibration.illumination_fit import (SPOT_SYSTEMATIC, fit_panel_illumination, leak_by_distance, median_leaks,
                                          pooled_stderr, probe_element_amplitudes)
from calibration.interference_fit import fit_interferometric_response
from calibration.procedures.context import CalContext, SLM_FIT_NAMES
from calibration.procedures.exposure import input_fills, kept_exposures
from calibration.procedures.panel_patterns import PANEL_CAMERAS, Panel, crosstalk_patterns
from calibration.quantities import Fit
from calibration.slm_fit import combine_slm
from calibration.slm_phase_fit import fit_diffractive_response
from hwio.encoding import BlazedEncoder, amplitude_transfer
from hwio.response import PhaseResponse

__all__ = ["measure_slm", "measure_phase_response", "measure_crosstalk", "measure_illumination", "PANEL_CAMERAS"]


def _levels(bits: int, n_levels: int) -> np.ndarray:
    top = 2 ** bits - 1
    n = min(int(n_levels), top + 1)
    return np.unique(np.round(np.linspace(0, top, n)).astype(np.int64))


def _stripes(slm, level: int) -> np.ndarray:
    """Binary grating: levels 0 and ``level`` on alternating pixel columns (period 2 px)."""
    frame = np.zeros(slm.shape, dtype=slm.level_dtype)
    frame[:, 1::2] = level
    return frame


# ----------------------------------------------------------------------------------- phase response
def measure_phase_response(ctx: CalContext, panel: str, *, n_levels: int = 256, n_avg: int = 1,
                           diffractive: bool = True) -> tuple[Fit, Fit | None, dict]:
    """Phase response of one panel from a sweep of uniform levels (and of binary gratings).

    Parameters
    ----------
    ctx : context with the registration and readout fits.
    panel : 'slm1', 'slm2' or 'probe_input'.
    n_levels : levels in the sweeps (all levels when the panel has fewer).
    n_avg : frames per LO phase.
    diffractive : also sweep the binary grating (zero order, or a blazed panel's first order).

    Returns
    -------
    (interferometric Fit named 'slm' with ``phase_range_rad`` (rad) and ``gamma`` and their
    standard errors, diffractive Fit or None, data dict: ``levels``, ``phase_rad`` and
    ``phase_stderr_rad`` (rad), ``input_amplitude``, ``circle``, ``exposure_s`` (s),
    ``grating_power`` (ADU) or ``diffractive_error``).
    """
    p = Panel(ctx, panel, n_avg)
    bits = p.slm.bit_depth
    levels = _levels(bits, n_levels)
    x = p.choose_input()
    p.setup(x)
    fields = np.empty((levels.size, ctx.readout(p.cam).n_spots), dtype=complex)
    enc = ctx.encoder(panel)
    first = isinstance(enc, BlazedEncoder)      # first-order optics: two-level gratings (docs/encodings.md)
    for i, g in enumerate(levels):
        ctx.show(panel, enc.two_level_frame(int(g)) if first else ctx.uniform_levels(panel, int(g)))
        fields[i] = p.fields()[p.cam]
    ctx.record(f"slm.{panel}.uniform", np.column_stack([fields.real, fields.imag]).astype(np.float64),
               units="homodyne field (re | im) per spot, rows = levels")
    interf, phase, se, circ = fit_interferometric_response(fields, levels, bits=bits)
    data = {"levels": levels, "phase_rad": phase, "phase_stderr_rad": se, "input_amplitude": x, "circle": circ,
            "exposure_s": float(ctx.bench.cameras[p.cam].exposure_s)}
    diff = None
    if diffractive:
        power = _grating_powers(ctx, p, levels, enc, first)
        try:
            diff = fit_diffractive_response(levels, power, bits=bits, order="first" if first else "zero")
        except ValueError as exc:       # e.g. a panel whose range stays below pi
            data["diffractive_error"] = str(exc)
        data["grating_power"] = power
    return interf, diff, data


def _grating_powers(ctx: CalContext, p: Panel, levels, enc, first: bool) -> np.ndarray:
    """Power (ADU ROI sums, LO and background removed) of the order the optics keep, summed over
    the spots, for a binary grating of levels 0 and g per level g (recorded)."""
    k = p.exposure_factor()         # LO and background powers scale with the exposure
    lo2 = k * ctx.lo_amplitude(p.cam) ** 2
    bg = k * np.asarray(ctx.fits[f"readout.{p.cam}"].arrays.get("background_power", 0.0))
    power = np.empty(levels.size)
    for i, g in enumerate(levels):
        ctx.show(p.name, enc.two_level_frame(int(g)) if first else _stripes(p.slm, int(g)))
        _, pw = p.fields(powers=True)
        per_spot = pw[p.cam].mean(axis=0) - lo2 - bg            # zero-order power per spot
        power[i] = per_spot.sum()
    ctx.record(f"slm.{p.name}.grating", np.column_stack([levels, power]).astype(np.float64),
               units="level | zero-order power (adu ROI sums, LO removed)")
    return power


# ----------------------------------------------------------------------------------- crosstalk
def measure_crosstalk(ctx: CalContext, panel: str, response: PhaseResponse, *, n_avg: int = 8,
                      x: float | None = None) -> Fit:
    """Pixel-crosstalk sigma of one panel from the zero order of block patterns.

    Parameters
    ----------
    ctx : context with the registration and readout fits.
    panel : 'slm1', 'slm2' or 'probe_input'.
    response : the panel's calibrated phase response.
    n_avg : frames per LO phase.
    x : input amplitude (default: the largest that does not saturate).

    Returns
    -------
    Fit 'slm.crosstalk' from :func:`calibration.crosstalk_fit.fit_zero_order_crosstalk`:
    ``crosstalk_px`` (px) with its standard error; ``info['input_amplitude']``.
    """
    p = Panel(ctx, panel, n_avg)
    p.setup(x if x is not None else p.choose_input())
    lay = ctx.bench.layouts[panel]
    pats, uniform = crosstalk_patterns(ctx, panel, response)
    period = getattr(ctx.encoder(panel), "grating_period_px", None)
    zero = ctx.zero_levels(panel)
    ctx.show(panel, zero)
    ez = p.fields()[p.cam]
    ctx.show(panel, uniform)
    eu = p.fields()[p.cam] - ez
    meas = {}
    for k, frame in pats.items():
        ctx.show(panel, frame)
        meas[k] = (p.fields()[p.cam] - ez) / eu
    ctx.record(f"slm.{panel}.crosstalk", np.array([[v.real, v.imag] for k in pats for v in meas[k]]),
               units="measured field ratio (re, im) per pattern and spot")
    fit = fit_zero_order_crosstalk(meas, eu, pats, uniform, zero, lay, response, period)
    fit.info["input_amplitude"] = p.x
    return fit


# ----------------------------------------------------------------------------------- illumination
def _frac_coords(layout):
    c = layout.block_centers_px()[:, :layout.n_cols]
    lo = np.asarray(layout.origin_px, float)
    ext = np.asarray(layout.extent_px, float) - lo
    return (c[..., 1] - lo[1]) / ext[1], (c[..., 0] - lo[0]) / ext[0]


def _row_classes(n_rows: int, spacing: int) -> list:
    """Row indices lit together: every ``spacing``-th row (``spacing`` classes, or one row each)."""
    m = max(1, min(int(spacing), int(n_rows)))
    return [np.arange(c, n_rows, m) for c in range(m)]


def _enough(reps_done) -> bool:
    """Repeats so far give every element's amplitude to SPOT_SYSTEMATIC (median) or better."""
    a = np.abs(np.asarray(reps_done))
    if a.shape[0] < 2:
        return False
    rel = pooled_stderr(a) / np.maximum(a.mean(axis=0), 1e-300)
    return float(np.median(rel)) <= SPOT_SYSTEMATIC


def measure_illumination(ctx: CalContext, panel: str, *, n_avg: int = 1, n_rep: int = 16, x: float | None = None,
                         forward: np.ndarray | None = None, spacing: int = 4) -> tuple[Fit | None, dict]:
    """Per-element amplitudes and the Gaussian illumination fit.

    Elements are lit several at a time where their light reaches different spots: slm1 column
    ``j`` (input ``j`` alone) and slm2 column ``j`` light every ``spacing``-th row at once
    (rows ``spacing`` apart: the output crosstalk between neighbouring spots stays out; the
    leakage measured on the unlit rows in between is kept in ``data['leak_by_distance']``);
    the backward probe through slm2 lights a whole row of slm2 at once (every element reaches
    its own cam_back spot).  slm1's single input carries up to the light of the whole input
    layer in the uniform sweep (``min(1, x n_in)``, halved while a spot saturates).  Every
    element is measured at least twice and at most ``n_rep`` times (``n_avg`` frames per LO
    phase each), until the repeats give the median element's amplitude to ``SPOT_SYSTEMATIC``;
    the scatter of the repeats gives the amplitude errors the fit is weighted with (``cam_a1``,
    which slm2 does not change, once per repeat).

    Parameters
    ----------
    ctx : context with the registration and readout fits.
    panel : 'slm1', 'slm2' or 'probe_input'.
    n_avg : frames per LO phase.
    n_rep : most repeats per element.
    x : input amplitude (default: the largest that does not saturate).
    forward : for probe_input, the complex slm2 element fields divided by a1 (from
        ``measure_illumination(ctx, 'slm2')``'s data ``element_field``).
    spacing : rows between elements lit at once.

    Returns
    -------
    (Fit 'slm.illumination' from :func:`calibration.illumination_fit.fit_panel_illumination`
    (``waist``, ``x0``, ``y0`` in layout fractions, with standard errors) or None for
    probe_input, data dict with ``amplitude`` (relative) and ``amplitude_stderr``).
    """
    lay = ctx.bench.layouts[panel]
    p = Panel(ctx, panel, n_avg)
    xin = x if x is not None else p.choose_input()
    data: dict = {"input_amplitude": xin, "spacing": int(spacing)}
    classes = _row_classes(lay.n_rows, spacing)
    leaks: list = []
    if panel == "slm1":
        amp, amp_se, n_reps = _illumination_slm1(ctx, p, xin, n_rep, classes, data, leaks)
    elif panel == "slm2":
        amp, amp_se, n_reps = _illumination_slm2(ctx, p, xin, n_rep, classes, data, leaks)
    else:
        amp, amp_se = _illumination_probe(ctx, p, xin, forward, data), None
    if panel != "probe_input":
        data["repeats"] = int(n_reps)
    if leaks:
        data["leak_by_distance"] = median_leaks(leaks)
    data["amplitude"] = amp
    ctx.record(f"slm.{panel}.illumination", amp.astype(np.float64), units="relative element amplitude")
    fit = None
    if panel != "probe_input" and amp.size >= 6:
        xs, ys = _frac_coords(lay)
        fit, amp_se = fit_panel_illumination(amp, xs, ys, amp_se, column_factors=panel == "slm1")
        data["amplitude_stderr"] = amp_se
        if "leak_by_distance" in data:
            fit.info["leak_by_distance"] = data["leak_by_distance"]
        fit.info["repeats"] = data.get("repeats")
        fit.info["spacing"] = int(spacing)
    return fit, data


def _illumination_slm1(ctx: CalContext, p: Panel, xin: float, n_rep: int, classes: list, data: dict,
                       leaks: list):
    """slm1 element amplitudes, one input (column) at a time, repeated until :func:`_enough`.

    One input may carry the light the whole input layer carried in the uniform-panel sweep (x on
    every input), as long as no lit element's spot saturates; a column that saturates is measured
    again at half the fill (and the next ones there).  Amplitudes are divided by the column's
    realised fill (fields are linear in it).  Returns (amplitudes, their pooled standard errors,
    repeats); adds ``single_input_fill`` to ``data`` and the first repeat's leaks to ``leaks``.
    """
    n_in = ctx.bench.sizes.n_in
    nr, nc = p.layout.n_rows, p.layout.n_cols
    fill = min(1.0, xin * n_in)
    reps = []
    fills = np.empty(nc)
    while len(reps) < n_rep and not _enough(reps):
        rep = np.empty((nr, nc))
        j = 0
        while j < nc:
            one = np.zeros(n_in)
            one[j] = 1.0
            col, col_leaks = _slm1_column(ctx, p, one, j, fill, xin, classes)
            if col is None:                     # a spot saturated: this column again at half the fill
                fill = max(0.5 * fill, xin)
                continue
            rep[:, j] = col
            realised = float(ctx.dmd.fill_fractions(one[None, :] * max(fill, 1.0 / ctx.dmd.n_active))[0, j])
            rep[:, j] /= realised
            fills[j] = realised
            if not reps:
                leaks.extend(col_leaks)
            j += 1
        reps.append(rep)
    reps = np.asarray(reps)
    data["single_input_fill"] = fills
    return reps.mean(axis=0), pooled_stderr(np.abs(reps)), len(reps)


def _slm1_column(ctx: CalContext, p: Panel, one, j: int, fill: float, xin: float, classes: list):
    """Field amplitudes of slm1 column ``j`` lit through input ``j`` alone, one row class at a time.

    Returns ((rows,) amplitudes, leak dicts per class), or (None, None) when a spot saturated
    while the fill is above ``xin``.
    """
    nr, nc = p.layout.n_rows, p.layout.n_cols
    p.setup(fill, inputs=one)
    ctx.show(p.name, ctx.zero_levels(p.name))
    ez = p.fields()[p.cam]
    col = np.empty(nr)
    col_leaks = []
    for rows in classes:
        w = np.zeros((nr, nc))
        w[rows, j] = 1.0
        ctx.show(p.name, ctx.weight_levels(p.name, w))
        ctx.peak_adu.clear()
        sig = p.fields()[p.cam] - ez
        if p.saturated() and fill > xin:
            return None, None
        col[rows] = np.abs(sig[rows])
        col_leaks.append(leak_by_distance(sig, rows, nr, len(classes)))
    return col, col_leaks


def _illumination_slm2(ctx: CalContext, p: Panel, xin: float, n_rep: int, classes: list, data: dict,
                       leaks: list):
    """slm2 element fields over a1 (cam_a1, which slm2 does not change, once per repeat),
    repeated until :func:`_enough`.  Returns (amplitudes, their pooled standard errors, repeats);
    adds ``element_field`` to ``data`` and the first repeat's leaks to ``leaks``."""
    nr, nc = p.layout.n_rows, p.layout.n_cols
    p.setup(xin)
    reps = []
    while len(reps) < n_rep and not _enough(reps):
        rep = np.empty((nr, nc), dtype=complex)
        ctx.show(p.name, ctx.zero_levels(p.name))
        # a1 does not depend on slm2: measured once per repeat, with the slm2 baseline
        base = p.fields([p.cam, "cam_a1"])
        a1 = base["cam_a1"]
        for j in range(nc):
            for rows in classes:
                w = np.zeros((nr, nc))
                w[rows, j] = 1.0
                ctx.show(p.name, ctx.weight_levels(p.name, w))
                sig = p.fields()[p.cam] - base[p.cam]
                rep[rows, j] = sig[rows] / a1[j]
                if not reps:
                    leaks.append(leak_by_distance(sig, rows, nr, len(classes)))
        reps.append(rep)
    reps = np.asarray(reps)
    elem = reps.mean(axis=0)
    data["element_field"] = elem
    return np.abs(elem), pooled_stderr(np.abs(reps)), len(reps)


def _illumination_probe(ctx: CalContext, p: Panel, xin: float, forward, data: dict) -> np.ndarray:
    """probe_input element amplitudes (1, n) from the backward field through row i of slm2 (every
    element (i, j) reaches cam_back spot j) with probe element i alone, over the forward field;
    adds ``backward_ratio`` to ``data``."""
    if forward is None:
        raise ValueError("probe_input illumination needs the forward slm2 element fields (measure slm2 first)")
    nc = p.layout.n_cols
    n2r, n2c = ctx.bench.layouts["slm2"].n_rows, ctx.bench.layouts["slm2"].n_cols
    ctx.show_inputs(input_fills(ctx, xin))
    ctx.show("slm1", ctx.uniform_levels("slm1", 0))
    ratios = np.full((nc, n2c), np.nan, dtype=complex)
    sig = np.zeros((nc, n2c), dtype=complex)
    p.n_avg = 16 * p.n_avg         # the backward probe is weak: average more
    for i in range(nc):
        pw = np.zeros((1, nc))
        pw[0, i] = 1.0
        ctx.show("probe_input", ctx.weight_levels("probe_input", pw))
        w2 = np.zeros((n2r, n2c))
        w2[i, :] = 1.0
        ctx.show("slm2", ctx.weight_levels("slm2", w2))
        f = p.fields([p.cam])[p.cam][:n2c]
        sig[i] = f
        ratios[i] = f / forward[i]
    amp = probe_element_amplitudes(ratios, sig)
    data["backward_ratio"] = ratios
    ctx.show("probe_input", ctx.zero_levels("probe_input"))
    return amp


# ----------------------------------------------------------------------------------- all panels
def measure_slm(ctx: CalContext, panels=("slm1", "slm2", "probe_input"), *, n_levels: int = 256,
                n_avg: int = 1, diffractive: bool = True, crosstalk: bool = True,
                illumination: bool = True) -> list[Fit]:
    """Calibrate the phase panels: response (interferometric + diffractive), crosstalk, illumination.

    Parameters
    ----------
    ctx : context with the registration and readout fits.
    panels : which of slm1, slm2, probe_input (probe_input's illumination needs slm2 in the
        same call).
    n_levels : levels in the response sweeps (all levels when the panel has fewer).
    n_avg : frames per LO phase in the response sweeps.
    diffractive, crosstalk, illumination : which extra measurements to make.

    Returns
    -------
    Fits 'slm' (slm1), 'slm.slm2', 'slm.probe_input' from
    :func:`calibration.slm_fit.combine_slm`: quantities ``phase_range_rad`` (rad), ``gamma``,
    ``crosstalk_px`` (px), ``illumination_waist`` (+ x0, y0; layout fractions) where measured,
    and ``phase_range_diffractive_rad`` (rad), each with its standard error; arrays
    ``phase_response_rad``, ``inverse_lut``,
    ``inverse_lut_phase_rad``, ``illumination_map``, ``phase_response_diffractive_rad``,
    ``amplitude_transfer`` and ``amplitude_transfer_edges`` (the realised amplitude fraction
    per step of the encoder's staircase), ``measured_levels`` / ``measured_phase_rad`` / ``measured_phase_stderr_rad``.
    """
    out = []
    forward = None
    for panel in panels:
        if panel not in SLM_FIT_NAMES:
            raise ValueError(f"unknown phase panel {panel!r}; choose from {', '.join(SLM_FIT_NAMES)}")
        with ctx.timed(f"slm.{panel}"), kept_exposures(ctx):
            fit, forward = _calibrate_panel(ctx, panel, forward, n_levels=n_levels, n_avg=n_avg,
                                            diffractive=diffractive, crosstalk=crosstalk, illumination=illumination)
            ctx.add(fit)
            out.append(fit)
    ctx.blank_all()
    return out


def _calibrate_panel(ctx: CalContext, panel: str, forward, *, n_levels: int, n_avg: int, diffractive: bool,
                     crosstalk: bool, illumination: bool) -> tuple[Fit, np.ndarray | None]:
    """Response, crosstalk and illumination of one panel, combined into its Fit.

    Returns (the panel's Fit, the slm2 element fields for probe_input's illumination: ``forward``
    updated after slm2).
    """
    interf, diff, data = measure_phase_response(ctx, panel, n_levels=n_levels, n_avg=n_avg,
                                                diffractive=diffractive)
    name = SLM_FIT_NAMES[panel]
    interf.name = name
    ctx.add(interf)                 # the calibrated LUT is used from here on
    response = ctx.response(panel)
    # frames for ~1e-3 relative field error per spot, from the sweep's phase noise per point
    noise = float(np.median(data["circle"]["noise_rad"])) * math.sqrt(n_avg)
    n_xt = int(np.clip(math.ceil((noise / 1e-3) ** 2), 8, 64))
    xt = measure_crosstalk(ctx, panel, response, x=data["input_amplitude"], n_avg=n_xt) if crosstalk else None
    ill, ill_data = (None, {})
    if illumination:
        if panel == "probe_input" and forward is None:
            ill_data = {}
        else:
            ill, ill_data = measure_illumination(ctx, panel, x=data["input_amplitude"], forward=forward)
        if panel == "slm2":
            forward = ill_data.get("element_field")
    fit = combine_slm(interf, illumination=ill, crosstalk=xt)
    fit.name = name
    _attach_measurements(fit, panel, data, ill, ill_data, xt, n_xt)
    _attach_diffractive(fit, diff, data)
    _attach_transfer(ctx, fit, panel, response, xt)
    return fit, forward


def _attach_measurements(fit: Fit, panel: str, data: dict, ill: Fit | None, ill_data: dict, xt: Fit | None,
                         n_xt: int) -> None:
    """Record the panel, camera, input, exposure, measured phases and the illumination and
    crosstalk details in ``fit``."""
    if ill is not None:
        fit.info["illumination"] = {k: ill.info[k] for k in ("repeats", "spacing", "leak_by_distance", "redchi",
                                                             "column_factors") if k in ill.info}
    fit.info["panel"] = panel
    fit.info["camera"] = PANEL_CAMERAS[panel]
    fit.info["input_amplitude"] = data["input_amplitude"]
    fit.info["exposure_s"] = data["exposure_s"]
    fit.arrays["measured_levels"] = data["levels"].astype(np.float64)
    fit.arrays["measured_phase_rad"] = data["phase_rad"]
    fit.arrays["measured_phase_stderr_rad"] = data["phase_stderr_rad"]
    if ill is None and "amplitude" in ill_data:
        a = np.asarray(ill_data["amplitude"], float)
        fit.arrays["illumination_map"] = a / a.max()
    if xt is not None:
        fit.info["crosstalk"] = {**xt.info, "frames_per_phase": n_xt}


def _attach_diffractive(fit: Fit, diff: Fit | None, data: dict) -> None:
    """The diffractive response, its range and its rms difference from the interferometric one."""
    if diff is not None:
        rd = np.asarray(diff.arrays["phase_response_rad"])
        fit.arrays["phase_response_diffractive_rad"] = rd
        fit.quantities["phase_range_diffractive_rad"] = diff.quantities["phase_range_rad"]
        fit.info["diffractive_vs_interferometric_rms_rad"] = float(
            np.sqrt(np.mean((rd - fit.arrays["phase_response_rad"]) ** 2)))
        fit.info["diffractive_model"] = diff.model
    elif "diffractive_error" in data:
        fit.info["diffractive_error"] = data["diffractive_error"]


def _attach_transfer(ctx: CalContext, fit: Fit, panel: str, response: PhaseResponse, xt: Fit | None) -> None:
    """What the encoder really realises for each programmed amplitude (LUT rounding, residual
    response error, fringing loss): the twin's per-panel transfer table, and the encoder's record."""
    sigma = float(xt.quantities["crosstalk_px"].value) if xt is not None else 0.0
    encoder = ctx.encoder(panel)
    edges, realised = amplitude_transfer(encoder, response, sigma)
    fit.info["encoder_dither"] = bool(encoder.dither)
    fit.info.update(getattr(encoder, "encoding_record", {}))      # blazed: encoding, grating period
    # the flatness map the panel was calibrated with (deploy refuses a bench with another)
    fit.info.update(getattr(encoder, "wavefront_record", None) or {"wavefront_map_sha256": None})
    fit.arrays["amplitude_transfer_edges"] = edges
    fit.arrays["amplitude_transfer"] = realised
    fit.info["amplitude_transfer"] = ("programmed fraction A realises amplitude_transfer[searchsorted("
                                      "amplitude_transfer_edges, A, 'right')] (hwio.encoding."
                                      "amplitude_transfer: the encoder's exact staircase)")
