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
    standard error from the circle residuals; :func:`calibration.slm_fit.fit_phase_response`.
(b) diffractive: the panel holds a binary grating of levels 0 and g (columns alternating,
    period 2 px).  The zero order, which the summing optics keep, has power
    ``A cos^2(phi(g)/2) + B`` (power = LO-averaged spot power minus the LO power and the
    background); :func:`calibration.slm_fit.fit_diffractive_response` with ``order='zero'``.
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
sigma.  The standard error is the larger of the fit's and the scatter of sigma fitted to each
pattern alone (a model-consistency check).

Illumination
------------
One element at a time at full amplitude (the rest at zero field): slm1 element (i, j) with
only input j on gives cam_z1 spot i ``k1 illum_ij``; slm2 element (i, j) gives cam_out spot i
``k2 illum_ij a1_j``, divided by a1_j measured on cam_a1 in the same frames;
:func:`calibration.slm_fit.fit_illumination` at the block centres in fractions of the layout
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
from scipy.optimize import least_squares, minimize_scalar

from calibration.procedures.context import CalContext, SLM_FIT_NAMES
from calibration.procedures.exposure import input_fills, kept_exposures, min_input
from calibration.quantities import Fit, Quantity
from calibration.slm_fit import combine_slm, fit_diffractive_response, fit_illumination, fit_phase_response
from hwio.encoding import BlazedEncoder, amplitude_transfer
from hwio.response import PhaseResponse

__all__ = ["measure_slm", "measure_phase_response", "measure_crosstalk", "measure_illumination",
           "fit_circle", "circle_phases", "PANEL_CAMERAS"]

PANEL_CAMERAS = {"slm1": "cam_z1", "slm2": "cam_out", "probe_input": "cam_back"}
#: relative systematic error of one spot's field from the per-spot readout calibration
SPOT_SYSTEMATIC = 3e-3
TWO_PI = 2.0 * math.pi


# ----------------------------------------------------------------------------------- pure helpers
def fit_circle(z, return_cov: bool = False):
    """Circle through complex points: (centre, radius, radial residuals[, 3x3 covariance of
    (centre real, centre imag, radius)]).

    Algebraic (Kasa) start, then geometric least squares on ``|z - c| - R``.
    """
    z = np.asarray(z, dtype=complex).ravel()
    if z.size < 3:
        raise ValueError(f"a circle fit needs at least 3 points, got {z.size}")
    a = np.column_stack([2 * z.real, 2 * z.imag, np.ones(z.size)])
    sol = np.linalg.lstsq(a, np.abs(z) ** 2, rcond=None)[0]
    c0 = complex(sol[0], sol[1])
    r0 = math.sqrt(max(sol[2] + abs(c0) ** 2, 1e-300))

    def res(p):
        return np.abs(z - complex(p[0], p[1])) - p[2]

    fit = least_squares(res, [c0.real, c0.imag, r0], method="lm")
    c = complex(fit.x[0], fit.x[1])
    if return_cov:
        dof = max(z.size - 3, 1)
        try:
            cov = np.linalg.inv(fit.jac.T @ fit.jac) * float(fit.fun @ fit.fun) / dof
        except np.linalg.LinAlgError:
            cov = np.full((3, 3), np.nan)
        return c, float(abs(fit.x[2])), fit.fun, cov
    return c, float(abs(fit.x[2])), fit.fun


def circle_phases(fields, levels):
    """Phase vs level from complex spot fields on circles (one circle per spot).

    Parameters
    ----------
    fields : (n_levels, n_spots) complex fields, levels increasing, first = reference level.
    levels : (n_levels,) the levels.

    Returns
    -------
    phase_rad (n_levels,) relative to the first level, stderr_rad (n_levels,), and a dict
    with per-spot centres, radii, phases and residual rms, and ``common_mode_noise_rad``
    (per-level noise shared by all spots, from the curve's second differences; included in
    stderr_rad).
    """
    f = np.asarray(fields, dtype=complex)
    n_lv, n_sp = f.shape
    per = np.empty((n_lv, n_sp))
    sig = np.empty(n_sp)
    radius = np.empty(n_sp)
    centres = np.empty(n_sp, dtype=complex)
    range_var = np.empty(n_sp)
    for k in range(n_sp):
        c, r, resid, cov = fit_circle(f[:, k], return_cov=True)
        ph = np.unwrap(np.angle(f[:, k] - c))
        per[:, k] = ph - ph[0]
        centres[k], radius[k] = c, r
        sig[k] = max(float(np.sqrt(np.mean(resid ** 2))), 1e-12) / r      # phase noise per point (rad)
        # an error of the centre shifts every phase coherently: its share of the last-minus-first phase
        w0, w1 = f[0, k] - c, f[-1, k] - c
        jac = np.array([w1.imag / abs(w1) ** 2 - w0.imag / abs(w0) ** 2,
                        -(w1.real / abs(w1) ** 2 - w0.real / abs(w0) ** 2)])
        range_var[k] = float(jac @ cov[:2, :2] @ jac)
    if np.median(per[-1]) < 0:        # the phase rises with level; flip a mirrored convention
        per = -per
    w = 1.0 / sig ** 2
    phase = per @ w / w.sum()
    # scatter between spots (when there are several) or the propagated noise, whichever is larger
    se_noise = np.full(n_lv, 1.0 / math.sqrt(w.sum()))
    if n_sp > 1:
        chi = ((per - phase[:, None]) ** 2 * w).sum(axis=1) / (n_sp - 1)
        se = se_noise * np.sqrt(np.maximum(chi, 1.0))
    else:
        se = se_noise
    se[0] = se[1] if n_lv > 1 else se[0]
    # noise common to every spot of a level (laser-power jitter between the four LO-phase frames
    # moves all spots' I/Q together) survives the average over spots and is not in the scatter
    # between spots: estimate the total per-level noise from the roughness of the averaged curve
    # (second differences of a smooth response are ~0; robust MAD) and add what is left over
    cm_var = 0.0
    if n_lv >= 8:
        d2 = phase[:-2] - 2.0 * phase[1:-1] + phase[2:]
        total_var = (1.4826 * float(np.median(np.abs(d2 - np.median(d2))))) ** 2 / 6.0
        cm_var = max(total_var - float(np.median(se[1:] ** 2)), 0.0)
        se = np.sqrt(se ** 2 + cm_var)
    wn = w / w.sum()
    centre_se = math.sqrt(float(np.sum(wn ** 2 * range_var)))
    return phase, se, {"centres": centres, "radii": radius, "per_spot_phase_rad": per, "noise_rad": sig,
                       "range_centre_stderr_rad": centre_se, "common_mode_noise_rad": math.sqrt(cm_var)}


# ----------------------------------------------------------------------------------- bench states
class _Panel:
    """Device states and measurements for one phase panel."""

    def __init__(self, ctx: CalContext, name: str, n_avg: int):
        self.ctx = ctx
        self.name = name
        self.cam = PANEL_CAMERAS[name]
        self.slm = ctx.bench.slms[name]
        self.layout = ctx.bench.layouts[name]
        self.n_avg = int(n_avg)
        self.x = 1.0
        if self.cam not in ctx.lo_cameras():
            raise ValueError(f"{name}: its camera {self.cam} has no LO channel; the SLM procedure needs homodyne "
                             f"readout there")
        ctx.need(f"readout.{self.cam}", "readout")

    def setup(self, x: float | None = None, inputs=None) -> None:
        ctx = self.ctx
        if x is not None:
            self.x = float(x)
        if inputs is None:
            xin = input_fills(ctx, self.x)
        else:       # chosen inputs: at least one DMD pixel each (never brighter than input_fills(x))
            xin = np.asarray(inputs, float) * max(self.x, 1.0 / ctx.dmd.n_active)
        ctx.show_inputs(xin)
        if self.name == "slm1":
            ctx.show("slm2", ctx.zero_levels("slm2"))
            ctx.show("probe_input", ctx.zero_levels("probe_input"))
        elif self.name == "slm2":
            ctx.show("slm1", ctx.uniform_levels("slm1", 0))
            ctx.show("probe_input", ctx.zero_levels("probe_input"))
        else:
            ctx.show("slm1", ctx.uniform_levels("slm1", 0))
            ctx.show("slm2", ctx.uniform_levels("slm2", 0))

    def fields(self, cams=None, powers: bool = False):
        cams = [self.cam] if cams is None else list(cams)
        return self.ctx.field_iq(cams, self.n_avg, return_powers=powers)

    def saturated(self) -> bool:
        return any(self.ctx.peak_adu.get(c, 0.0) >= self.ctx.saturation_adu(c) for c in self.ctx.peak_adu)

    def choose_input(self, max_halvings: int = 24, max_shortenings: int = 12) -> float:
        """Largest mean input fill (1, 1/2, ...) at which the uniform panel does not saturate.

        Below one DMD pixel per block fewer inputs are on
        (:func:`calibration.procedures.exposure.input_fills`); below a single pixel the
        camera's exposure is quartered instead (at most ``max_shortenings`` times;
        :func:`measure_slm` restores it after the panel).
        """
        x = 1.0
        x_min = min_input(self.ctx)
        halvings = shortenings = 0
        while True:
            self.setup(x)
            self.ctx.show(self.name, self.ctx.uniform_levels(self.name, 0))
            self.ctx.peak_adu.clear()
            self.ctx.spot_powers([self.cam], (0.0, math.pi), 1)
            if not self.saturated():
                return x
            if halvings < max_halvings and 0.5 * x >= x_min * (1 - 1e-9):
                x *= 0.5
                halvings += 1
                continue
            t = float(self.ctx.bench.cameras[self.cam].exposure_s)
            if shortenings >= max_shortenings or self.ctx.set_exposure(self.cam, 0.25 * t) >= t:
                raise ValueError(f"{self.name}: {self.cam} saturates even at input amplitude {x:.3g} and exposure "
                                 f"{t:.3g} s; lower the laser power")
            shortenings += 1

    def exposure_factor(self) -> float:
        """The camera's exposure now over the one its readout fit (LO amplitudes, background) was measured at."""
        ro = self.ctx.fits.get(f"readout.{self.cam}")
        t_ro = ro.info.get("exposure_s") if ro is not None else None
        t = float(self.ctx.bench.cameras[self.cam].exposure_s)
        return t / float(t_ro) if t_ro else 1.0


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
    """Phase response of one panel: interferometric Fit (named 'slm'), diffractive Fit or None, data."""
    p = _Panel(ctx, panel, n_avg)
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
    phase, se, circ = circle_phases(fields, levels)
    interf = fit_phase_response(levels, phase, bits=bits, phase_stderr_rad=se)
    # the circle centres' uncertainty moves all phases together: add its share to the range
    rq = interf.quantities["phase_range_rad"]
    interf.quantities["phase_range_rad"] = Quantity(rq.value, math.hypot(rq.stderr, circ["range_centre_stderr_rad"]),
                                                    rq.units)
    interf.info["range_centre_stderr_rad"] = circ["range_centre_stderr_rad"]
    data = {"levels": levels, "phase_rad": phase, "phase_stderr_rad": se, "input_amplitude": x, "circle": circ,
            "exposure_s": float(ctx.bench.cameras[p.cam].exposure_s)}
    diff = None
    if diffractive:
        k = p.exposure_factor()         # LO and background powers scale with the exposure
        lo2 = k * ctx.lo_amplitude(p.cam) ** 2
        bg = k * np.asarray(ctx.fits[f"readout.{p.cam}"].arrays.get("background_power", 0.0))
        power = np.empty(levels.size)
        power_se = np.empty(levels.size)
        for i, g in enumerate(levels):
            ctx.show(panel, enc.two_level_frame(int(g)) if first else _stripes(p.slm, int(g)))
            _, pw = p.fields(powers=True)
            per_spot = pw[p.cam].mean(axis=0) - lo2 - bg            # zero-order power per spot
            power[i] = per_spot.sum()
            power_se[i] = float(np.std(pw[p.cam], axis=0, ddof=1).sum()) / 2.0 / math.sqrt(p.n_avg)
        ctx.record(f"slm.{panel}.grating", np.column_stack([levels, power]).astype(np.float64),
                   units="level | zero-order power (adu ROI sums, LO removed)")
        try:
            diff = fit_diffractive_response(levels, power, bits=bits, order="first" if first else "zero")
        except ValueError as exc:       # e.g. a panel whose range stays below pi
            data["diffractive_error"] = str(exc)
        data["grating_power"] = power
    return interf, diff, data


# ----------------------------------------------------------------------------------- crosstalk
def _patterns(ctx: CalContext, panel: str, response: PhaseResponse):
    enc = ctx.encoder(panel)
    if isinstance(enc, BlazedEncoder):
        return enc.crosstalk_patterns(response.inverse())
    slm = ctx.bench.slms[panel]
    lay = ctx.bench.layouts[panel]
    lut = response.inverse()
    l0 = int(lut(np.array([0.0]))[0])
    lpi = int(lut(np.array([math.pi]))[0])
    lhalf = int(lut(np.array([0.5 * math.pi]))[0])
    active = lay.element_map(slm.shape) >= 0
    rr, cc = np.indices(slm.shape)
    g = lay.guard_px
    lr = (rr - lay.origin_px[0] - g) % lay.pitch_px[0]
    lc = (cc - lay.origin_px[1] - g) % lay.pitch_px[1]
    dt = slm.level_dtype
    pats = {
        "frame_pi": np.where(active, l0, lpi),
        "checker_in": np.where(active & ((lr + lc) % 2 == 1), lpi, l0),
        "stripes4_in": np.where(active & ((lc // 2) % 2 == 1), lpi, l0),
        "frame_half_pi": np.where(active, l0, lhalf),
    }
    return {k: v.astype(dt) for k, v in pats.items()}, np.full(slm.shape, l0, dtype=dt)


class BlockBlurMeans:
    """Element means of a blurred panel field, for many blur widths: the separable form of
    :func:`hwio.encoding.realised_weights` (Gaussian blur with zero field outside the panel,
    ``truncate=4``, optionally the first-order carrier ``exp(-2 pi i X / period)``, then the
    mean over each block's active rectangle).

    ``E = A f B^T`` with ``A[i, r]`` the mean over block row ``i``'s active rows of the 1-D
    kernel at ``r`` and ``B[j, c]`` the same over block column ``j``'s active columns (times the
    carrier): two small matrix products per frame and width instead of a blur of the whole panel.
    """

    def __init__(self, layout, shape, period: float | None = None):
        g = layout.guard_px
        bh, bw = layout.block_px[0] - 2 * g, layout.block_px[1] - 2 * g
        self._rows = layout.origin_px[0] + g + np.arange(layout.n_rows)[:, None] * layout.pitch_px[0] + np.arange(bh)
        self._cols = layout.origin_px[1] + g + np.arange(layout.n_cols)[:, None] * layout.pitch_px[1] + np.arange(bw)
        self.shape = tuple(shape)
        self._carrier = None
        if period is not None:
            p = float(period)
            self._carrier = np.exp(-2j * np.pi * (np.arange(self.shape[1]) % p) / p)
        self._memo: dict = {}

    @staticmethod
    def _kernel_means(idx: np.ndarray, n: int, sigma: float, weight=None) -> np.ndarray:
        if sigma > 0:
            radius = int(4.0 * sigma + 0.5)
            off = np.arange(-radius, radius + 1)
            g = np.exp(-0.5 * off ** 2 / sigma ** 2)
            g /= g.sum()
        else:
            off, g = np.zeros(1, dtype=int), np.ones(1)
        p = idx.ravel()
        wp = np.ones(p.size) if weight is None else weight[p]
        m = np.zeros((idx.shape[0], n), dtype=complex if weight is not None else float)
        e = np.repeat(np.arange(idx.shape[0]), idx.shape[1])
        for o, w in zip(off, g):
            q = p + o
            ok = (q >= 0) & (q < n)
            np.add.at(m, (e[ok], q[ok]), w * wp[ok] / idx.shape[1])
        return m

    def __call__(self, field: np.ndarray, sigma: float) -> np.ndarray:
        """(n_rows, n_cols) complex element means of ``field`` (the panel's complex pixel field)
        blurred with sigma ``sigma`` (px)."""
        key = round(float(sigma), 12)
        ab = self._memo.get(key)
        if ab is None:
            ab = (self._kernel_means(self._rows, self.shape[0], sigma),
                  self._kernel_means(self._cols, self.shape[1], sigma, self._carrier))
            if len(self._memo) > 256:
                self._memo.clear()
            self._memo[key] = ab
        return ab[0] @ field @ ab[1].T


def _pixel_fields(frames: dict, response) -> dict:
    """name -> complex pixel field exp(i phi(level)) of each level frame."""
    return {k: np.exp(1j * response.phase(np.asarray(v, np.int64))) for k, v in frames.items()}


def _model_ratios(pats, uniform, zero, layout, response, sigma, period=None, means=None, fields=None):
    """Model of ``(E_P - E_Z) / (E_U - E_Z)`` per pattern (element mean) at crosstalk ``sigma``
    (``period``: the first order of a blazed panel's grating).  ``means``
    (:class:`BlockBlurMeans`) and ``fields`` (:func:`_pixel_fields` of the patterns, 'uniform'
    and 'zero') may be passed to reuse them between calls."""
    if means is None:
        means = BlockBlurMeans(layout, np.shape(uniform), period)
    if fields is None:
        fields = _pixel_fields({**pats, "uniform": uniform, "zero": zero}, response)
    z = means(fields["zero"], sigma)
    u = means(fields["uniform"], sigma) - z
    return {k: complex(np.mean((means(fields[k], sigma) - z) / u)) for k in pats}


def measure_crosstalk(ctx: CalContext, panel: str, response: PhaseResponse, *, n_avg: int = 8,
                      x: float | None = None) -> Fit:
    """Pixel-crosstalk sigma of one panel (needs its calibrated response); Fit 'slm.crosstalk'."""
    p = _Panel(ctx, panel, n_avg)
    p.setup(x if x is not None else p.choose_input())
    lay = ctx.bench.layouts[panel]
    pats, uniform = _patterns(ctx, panel, response)
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
    w = np.abs(eu) ** 2
    w = w / w.sum()
    names = list(pats)
    means = BlockBlurMeans(lay, uniform.shape, period)
    pix = _pixel_fields({**pats, "uniform": uniform, "zero": zero}, response)

    def model(sigma, which=None):
        return _model_ratios(pats if which is None else {which: pats[which]}, uniform, zero, lay, response,
                             sigma, period, means=means, fields=pix)

    def resid(sigma):
        mod = model(sigma)
        r = [(meas[k] - mod[k]) * np.sqrt(w) for k in names]
        r = np.concatenate(r)
        return np.concatenate([r.real, r.imag])

    grid = np.linspace(0.0, 3.0, 31)
    cost = [float(resid(s) @ resid(s)) for s in grid]
    k0 = int(np.argmin(cost))
    lo, hi = grid[max(k0 - 1, 0)], grid[min(k0 + 1, grid.size - 1)]
    opt = minimize_scalar(lambda s: float(resid(s) @ resid(s)), bounds=(lo, hi), method="bounded",
                          options={"xatol": 1e-5})
    sigma = float(opt.x)
    r0 = resid(sigma)
    h = 1e-4
    jac = (resid(sigma + h) - resid(max(sigma - h, 0.0))) / (sigma + h - max(sigma - h, 0.0))
    n_eff = r0.size
    # residuals are weighted by spot power fractions: per-point variance = rss / (n - 1) / weight
    dof = max(n_eff - 1, 1)
    se = math.sqrt(float(r0 @ r0) / dof / max(float(jac @ jac), 1e-300))
    # consistency between patterns: sigma from each pattern alone; their scatter bounds the error
    per_pattern = {}
    for k in names:
        def cost_k(sg, k=k):
            m = model(sg, k)[k]
            r = (meas[k] - m) * np.sqrt(w)
            return float(np.sum(np.abs(r) ** 2))
        per_pattern[k] = float(minimize_scalar(cost_k, bounds=(max(sigma - 0.3, 0.0), sigma + 0.3),
                                               method="bounded", options={"xatol": 1e-5}).x)
    spread = np.array(list(per_pattern.values()))
    se_stat = se
    se = max(se, float(spread.std(ddof=1) / math.sqrt(spread.size))) if spread.size > 1 else se
    mod = model(sigma)
    return Fit(name="slm.crosstalk", model="gaussian-blur zero-order",
               quantities={"crosstalk_px": Quantity(sigma, se, "px")},
               x=np.arange(len(names), dtype=float),
               y=np.array([float(np.sum(np.abs(meas[k]) * w)) for k in names]),
               y_fit=np.array([abs(mod[k]) for k in names]),
               info={"patterns": names, "measured_ratio": {k: [[float(v.real), float(v.imag)] for v in meas[k]]
                                                           for k in names},
                     "model_ratio": {k: [mod[k].real, mod[k].imag] for k in names}, "input_amplitude": p.x,
                     "crosstalk_px_per_pattern": per_pattern, "stderr_statistical_px": se_stat})


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


def _leak_by_distance(signal: np.ndarray, lit: np.ndarray, n_rows: int, spacing: int) -> dict:
    """Field seen on unlit spots relative to the lit spot ``d`` rows away, median per distance
    ``d`` = 1 .. spacing - 1 (the output crosstalk that lit rows ``spacing`` apart leave out)."""
    out = {}
    for d in range(1, max(int(spacing), 1)):
        vals = []
        for k in lit:
            for i in (k - d, k + d):
                if 0 <= i < n_rows and (i - lit[0]) % spacing != 0 and abs(signal[k]) > 0:
                    vals.append(abs(signal[i]) / abs(signal[k]))
        if vals:
            out[d] = float(np.median(vals))
    return out


def _pooled_stderr(reps: np.ndarray):
    """Standard error of the mean over repeats ``reps`` (n_rep, rows, cols), pooled: the noise of
    an element's reading is its spot's (row) times its column's (e.g. 1 / a1_j) -- the rank-one
    model ``row mean x column mean / grand mean`` of the repeat variances -- so an element's
    weight does not depend on its own few repeats (weights from a handful of repeats bias a
    weighted fit towards the elements whose repeats happened to agree).  None for one repeat."""
    if reps.shape[0] < 2:
        return None
    var = reps.var(axis=0, ddof=1)
    grand = float(var.mean())
    if not grand > 0:
        return np.full(var.shape, 1e-300)
    model = np.outer(var.mean(axis=1), var.mean(axis=0)) / grand
    return np.sqrt(model / reps.shape[0])


def _jackknife_errors(fit: Fit, amp, xs, ys, se) -> None:
    """Widen the illumination fit's ``waist``/``x0``/``y0`` errors to the delete-one-row and
    delete-one-column jackknife's: errors common to a row (its spot's readout calibration) or a
    column (slm2's division by the column's ``a1``) are not independent per element."""
    nr, nc = amp.shape
    keys = ("waist", "x0", "y0")
    var = dict.fromkeys(keys, 0.0)
    for axis, n in ((0, nr), (1, nc)):
        if n < 4:
            continue
        vals = {k: [] for k in keys}
        for i in range(n):
            keep = np.arange(n) != i
            sl = (keep, slice(None)) if axis == 0 else (slice(None), keep)
            try:
                f = fit_illumination(amp[sl], xs[sl], ys[sl], stderr=se[sl])
            except ValueError:
                continue
            for k in keys:
                vals[k].append(f.quantities[k].value)
        for k in keys:
            v = np.asarray(vals[k])
            if v.size > 2:
                var[k] += (v.size - 1) / v.size * float(np.sum((v - v.mean()) ** 2))
    for k in keys:
        q = fit.quantities[k]
        fit.quantities[k] = Quantity(q.value, max(q.stderr, math.sqrt(var[k])), q.units)
    fit.info["stderr_jackknife"] = {k: math.sqrt(var[k]) for k in keys}


def fit_column_free_illumination(amplitude, xs, ys, stderr) -> Fit:
    """Round Gaussian illumination from the row profile, with a free factor per column.

    Every element of column ``j`` of slm1 is lit through input ``j`` alone, whose own
    illumination (the input panel's beam) multiplies the whole column: the column profile of
    slm1 cannot be told apart from it.  The model ``c_j exp(-((y - y0) / waist)^2)`` takes the
    waist and ``y0`` from the rows (a round beam: one waist); ``x0`` is the centre of the
    columns' product profile (an elliptical fit of the amplitudes; exact when both beams are
    centred on their layouts).  Errors scaled by sqrt(reduced chi^2) when that exceeds 1; the
    per-spot readout systematic (``SPOT_SYSTEMATIC``, common to a row's elements) is added to the
    waist's and ``y0``'s from a fit of the row profile with that error per row.
    """
    a = np.asarray(amplitude, float)
    se = np.asarray(stderr, float)
    nr, nc = a.shape
    if nr < 3:
        raise ValueError(f"illumination: a row profile needs >= 3 rows, got {nr}")
    y = np.asarray(ys, float)[:, 0]
    ext = float(max(np.ptp(y), 1e-12))

    def model(p):
        return np.exp(p[:nc])[None, :] * np.exp(-((y[:, None] - p[nc]) / p[nc + 1]) ** 2)

    def resid(p):
        return ((model(p) - a) / se).ravel()

    wt = np.clip(a, 0, None)
    y0 = float((wt.sum(axis=1) * y).sum() / max(wt.sum(), 1e-300))
    p0 = np.concatenate([np.log(np.maximum(a.max(axis=0), 1e-300)), [y0, ext]])
    lo = np.concatenate([np.full(nc, -np.inf), [-np.inf, 1e-6 * ext]])
    res = least_squares(resid, p0, bounds=(lo, np.full(nc + 2, np.inf)), x_scale="jac")
    dof = max(a.size - nc - 2, 1)
    redchi = float(res.fun @ res.fun) / dof
    try:
        cov = np.linalg.inv(res.jac.T @ res.jac) * max(redchi, 1.0)
        perr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    except np.linalg.LinAlgError:
        perr = np.full(nc + 2, np.nan)
    # every element of a row is read on the same spot: the per-spot readout systematic
    # (SPOT_SYSTEMATIC) scales a whole row, so it enters the row profile once per row
    col = np.exp(res.x[:nc])
    prof = (a / col[None, :]).mean(axis=1)
    gy = np.exp(-((y - res.x[nc]) / res.x[nc + 1]) ** 2)
    jac = np.column_stack([gy, gy * 2 * (y - res.x[nc]) / res.x[nc + 1] ** 2,
                           gy * 2 * (y - res.x[nc]) ** 2 / res.x[nc + 1] ** 3]) / (SPOT_SYSTEMATIC * prof)[:, None]
    try:
        sys_se = np.sqrt(np.clip(np.diag(np.linalg.inv(jac.T @ jac)), 0.0, None))[1:]
    except np.linalg.LinAlgError:
        sys_se = np.zeros(2)
    perr[nc:nc + 2] = np.hypot(perr[nc:nc + 2], sys_se)
    # x0: the product profile's centre (an elliptical fit; a round one when too few columns
    # leave its column waist undetermined)
    ell = fit_illumination(a, xs, ys, stderr=se, elliptical=nc >= 4)
    waist, x0 = float(res.x[nc + 1]), ell.quantities["x0"]
    xx = np.asarray(xs, float)
    shape = np.exp(-((xx - x0.value) ** 2 + (np.asarray(ys, float) - res.x[nc]) ** 2) / waist ** 2)
    best = model(res.x)
    q = {"amplitude": Quantity(float(np.exp(res.x[:nc]).max()), float("nan"), "data units"),
         "x0": x0, "y0": Quantity(float(res.x[nc]), float(perr[nc]), ""),
         "waist": Quantity(waist, float(perr[nc + 1]), "")}
    return Fit(name="slm.illumination", model="gaussian rows x free column factors", quantities=q,
               arrays={"illumination_map": shape / shape.max(), "column_factor": np.exp(res.x[:nc])},
               x=np.asarray(ys, float).ravel(), y=a.ravel(), y_fit=best.ravel(),
               info={"redchi": redchi, "elliptical": False, "column_factors": True,
                     "waist_x_product": float(ell.quantities.get("waist_x", ell.quantities["waist"]).value)})


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

    Returns (Fit 'slm.illumination' or None for probe_input, data dict with ``amplitude``).
    For probe_input pass ``forward``: the complex slm2 element fields divided by a1 (from
    ``measure_illumination(ctx, 'slm2')``'s data ``element_field``).
    """
    sz = ctx.bench.sizes
    lay = ctx.bench.layouts[panel]
    p = _Panel(ctx, panel, n_avg)
    xin = x if x is not None else p.choose_input()
    nr, nc = lay.n_rows, lay.n_cols
    data: dict = {"input_amplitude": xin, "spacing": int(spacing)}
    classes = _row_classes(nr, spacing)
    leaks: list = []
    def enough(reps_done):
        """Repeats so far give every element's amplitude to SPOT_SYSTEMATIC (median) or better."""
        a = np.abs(np.asarray(reps_done))
        if a.shape[0] < 2:
            return False
        rel = _pooled_stderr(a) / np.maximum(a.mean(axis=0), 1e-300)
        return float(np.median(rel)) <= SPOT_SYSTEMATIC

    if panel == "slm1":
        # one input at a time: it may carry the light the whole input layer carried in the
        # uniform-panel sweep (x on every input), as long as no lit element's spot saturates; a
        # column that saturates is measured again at half the fill (and the next ones there).
        # Amplitudes are divided by the column's realised fill (fields are linear in it).
        fill = min(1.0, xin * sz.n_in)
        reps = []
        fills = np.empty(nc)
        while len(reps) < n_rep and not enough(reps):
            rep = np.empty((nr, nc))
            j = 0
            while j < nc:
                one = np.zeros(sz.n_in)
                one[j] = 1.0
                p.setup(fill, inputs=one)
                ctx.show(panel, ctx.zero_levels(panel))
                ez = p.fields()[p.cam]
                again = False
                col_leaks = []
                for rows in classes:
                    w = np.zeros((nr, nc))
                    w[rows, j] = 1.0
                    ctx.show(panel, ctx.weight_levels(panel, w))
                    ctx.peak_adu.clear()
                    sig = p.fields()[p.cam] - ez
                    if p.saturated() and fill > xin:
                        fill, again = max(0.5 * fill, xin), True
                        break
                    rep[rows, j] = np.abs(sig[rows])
                    col_leaks.append(_leak_by_distance(sig, rows, nr, len(classes)))
                if again:
                    continue
                realised = float(ctx.dmd.fill_fractions(one[None, :] * max(fill, 1.0 / ctx.dmd.n_active))[0, j])
                rep[:, j] /= realised
                fills[j] = realised
                if not reps:
                    leaks.extend(col_leaks)
                j += 1
            reps.append(rep)
        reps = np.asarray(reps)
        data["single_input_fill"] = fills
        amp = reps.mean(axis=0)
        amp_se = _pooled_stderr(np.abs(reps))
    elif panel == "slm2":
        p.setup(xin)
        reps = []
        while len(reps) < n_rep and not enough(reps):
            rep = np.empty((nr, nc), dtype=complex)
            ctx.show(panel, ctx.zero_levels(panel))
            # a1 does not depend on slm2: measured once per repeat, with the slm2 baseline
            base = p.fields([p.cam, "cam_a1"])
            a1 = base["cam_a1"]
            for j in range(nc):
                for rows in classes:
                    w = np.zeros((nr, nc))
                    w[rows, j] = 1.0
                    ctx.show(panel, ctx.weight_levels(panel, w))
                    sig = p.fields()[p.cam] - base[p.cam]
                    rep[rows, j] = sig[rows] / a1[j]
                    if not reps:
                        leaks.append(_leak_by_distance(sig, rows, nr, len(classes)))
            reps.append(rep)
        reps = np.asarray(reps)
        elem = reps.mean(axis=0)
        amp = np.abs(elem)
        amp_se = _pooled_stderr(np.abs(reps))
        data["element_field"] = elem
    else:
        if forward is None:
            raise ValueError("probe_input illumination needs the forward slm2 element fields (measure slm2 first)")
        # backward through row i of slm2 (every element (i, j) reaches cam_back spot j), probe element i alone
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
        # for fixed j the ratio is t_j * d2_i: normalise every column j by its sum over i, then
        # average the columns weighted by their backward signal power
        a = np.abs(ratios)
        rel = a / a.sum(axis=0, keepdims=True)
        wgt = (np.abs(sig) ** 2).sum(axis=0)
        amp = ((rel * wgt[None, :]).sum(axis=1) / wgt.sum())[None, :]
        data["backward_ratio"] = ratios
        amp_se = None
        ctx.show("probe_input", ctx.zero_levels("probe_input"))
    if panel != "probe_input":
        data["repeats"] = int(len(reps))
    if leaks:
        dist = sorted({d for lk in leaks for d in lk})
        data["leak_by_distance"] = {int(d): float(np.median([lk[d] for lk in leaks if d in lk])) for d in dist}
    data["amplitude"] = amp
    ctx.record(f"slm.{panel}.illumination", amp.astype(np.float64), units="relative element amplitude")
    fit = None
    if panel != "probe_input" and amp.size >= 6:
        xs, ys = _frac_coords(lay)
        if amp_se is not None:
            # repeat scatter (laser jitter, shot noise) plus 0.3 % per element for the per-spot readout
            # calibration (ROI fractions, LO amplitudes), which no repeat reveals
            amp_se = np.hypot(amp_se, SPOT_SYSTEMATIC * amp)
        if panel == "slm1" and amp_se is not None and nr >= 3 and nc >= 2:
            # each column is lit through its own input, whose beam profile multiplies it
            fit = fit_column_free_illumination(amp, xs, ys, amp_se)
        else:
            fit = fit_illumination(amp, xs, ys, stderr=amp_se)
            if amp_se is not None and fit.info["redchi"] > 1.0:    # model misfit: scale the errors up
                fit = fit_illumination(amp, xs, ys, stderr=amp_se * math.sqrt(fit.info["redchi"]))
            if amp_se is not None:
                _jackknife_errors(fit, amp, xs, ys, amp_se)
        data["amplitude_stderr"] = amp_se
        if "leak_by_distance" in data:
            fit.info["leak_by_distance"] = data["leak_by_distance"]
        fit.info["repeats"] = data.get("repeats")
        fit.info["spacing"] = int(spacing)
    return fit, data


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
    :func:`calibration.slm_fit.combine_slm`: quantities ``phase_range_rad``, ``gamma``,
    ``crosstalk_px``, ``illumination_waist`` (+ x0, y0) where measured, and
    ``phase_range_diffractive_rad``; arrays ``phase_response_rad``, ``inverse_lut``,
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
            if diff is not None:
                rd = np.asarray(diff.arrays["phase_response_rad"])
                fit.arrays["phase_response_diffractive_rad"] = rd
                fit.quantities["phase_range_diffractive_rad"] = diff.quantities["phase_range_rad"]
                fit.info["diffractive_vs_interferometric_rms_rad"] = float(
                    np.sqrt(np.mean((rd - fit.arrays["phase_response_rad"]) ** 2)))
                fit.info["diffractive_model"] = diff.model
            elif "diffractive_error" in data:
                fit.info["diffractive_error"] = data["diffractive_error"]
            # what the encoder really realises for each programmed amplitude (LUT rounding,
            # residual response error, fringing loss): the twin's per-panel transfer table
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
            ctx.add(fit)
            out.append(fit)
    ctx.blank_all()
    return out
