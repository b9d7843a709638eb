"""Registration through the bench: light every neuron's spot in turn, find it, fit the transforms.

Spot k of a camera is neuron k.  Light reaches a camera's spot k when (double-phase frames
through the PhaseEncoder, with an ideal linear LUT before the SLMs are calibrated; any frame
that lights one spot works):

* ``cam_z1``, ``cam_a1`` (hidden neuron k): inputs on, slm1 row k at full amplitude;
* ``cam_back`` (hidden neuron k, backward): the probe on every output, slm2 column k at full
  amplitude (measured in the same frames as cam_z1/cam_a1, which also bleach the cell at k);
* ``cam_out`` (output k): inputs on, slm1 full, slm2 row k at full amplitude.

The "off" frame of a sequence holds the lit row/column at zero amplitude.  Frames are taken at
the LO phases 0, pi/2, pi, 3 pi/2; the homodyne images ``I = P_0 - P_pi`` and ``Q = P_pi/2 -
P_3pi/2`` of the on state minus those of the off state hold only spot k (the interference
term ``4 |LO| (E_on - E_off)``, far above the shot noise of the LO even for the weak backward
probe); their projection on the dominant (I, Q) direction is the spot image, with a
per-pixel variance from the scatter of the averaged frames.  A camera without an LO uses
the intensity difference.  If a spot would saturate the camera the input amplitude is
halved until it does not, down to one DMD pixel per block and then on fewer inputs down to a
single pixel; beyond that the exposure of the saturating cameras is shortened (a quarter at a
time; spot centres and widths do not depend on it) and restored at the end.  Spot images are
flat-field corrected with the camera's PRNU map when the camera is calibrated.

:func:`calibration.spot_fit.spot_image` forms the spot images,
:func:`calibration.spot_fit.find_spot` gives each centre (sub-pixel, with standard
errors) and the PSF sigma; :func:`calibration.registration_fit.fit_transform` fits the
layout -> camera transform (similarity below 3 non-collinear spots, affine, or homography
when significantly better; RANSAC against outliers) and
:func:`calibration.registration_fit.register_camera` derives the stored quantities.  This
module takes the frames and records them.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.procedures.exposure import input_fills, kept_exposures, min_input
from calibration.quantities import Fit, Quantity
from calibration.registration_fit import register_camera
from calibration.spot_fit import fit_spots, spot_image

__all__ = ["measure_registration", "REFERENCE_REGISTRATION_CAMERA"]

REFERENCE_REGISTRATION_CAMERA = "cam_z1"
_HIDDEN_CAMS = ("cam_z1", "cam_a1", "cam_back")
_OUTPUT_CAMS = ("cam_out",)


def _state_images(ctx: CalContext, cams, n_avg):
    """Per camera: the I and Q images (LO phases 0 - pi, pi/2 - 3pi/2) with their variances, the
    LO-averaged mean image and its variance, and the peak pixel; cameras without an LO get
    only the mean image."""
    lo_cams = set(ctx.lo_cameras()) if "lo" in ctx.bench.slms else set()
    phases = (0.0, 0.5 * math.pi, math.pi, 1.5 * math.pi) if lo_cams else (0.0,)
    means = {c: [] for c in cams}
    vars_ = {c: [] for c in cams}
    peak = {c: 0.0 for c in cams}
    for ph in phases:
        if lo_cams:
            ctx.set_lo(ph)
        for c in cams:
            n = int(n_avg[c]) if isinstance(n_avg, dict) else int(n_avg)
            st = ctx.grab_stack(c, n).astype(np.float64)
            peak[c] = max(peak[c], float(st.max()))
            means[c].append(st.mean(axis=0))
            vars_[c].append(st.var(axis=0, ddof=1) / n if n > 1 else np.zeros(st.shape[1:]))
    out = {}
    for c in cams:
        m, v = means[c], vars_[c]
        out[c] = {"m": m, "v": v, "lo": c in lo_cams}
    return out, peak


class _Sequence:
    """Frames that light one neuron k at a time on some cameras."""

    def __init__(self, ctx: CalContext, kind: str):
        self.ctx = ctx
        self.kind = kind
        sz = ctx.bench.sizes
        self.n = sz.n_hidden if kind == "hidden" else sz.n_out
        self.cams = [c for c in (_HIDDEN_CAMS if kind == "hidden" else _OUTPUT_CAMS) if c in ctx.bench.cameras]

    def setup(self, x: float) -> None:
        ctx, sz = self.ctx, self.ctx.bench.sizes
        ctx.show_inputs(input_fills(ctx, x))
        if self.kind == "hidden":
            ctx.show("probe_input", ctx.weight_levels("probe_input", np.ones((1, sz.n_out))))
        else:
            ctx.show("slm1", ctx.weight_levels("slm1", np.ones((sz.n_hidden, sz.n_in))))
            ctx.show("probe_input", ctx.zero_levels("probe_input"))

    def light(self, k: int | None) -> None:
        """Light neuron k (None: the off frame)."""
        ctx, sz = self.ctx, self.ctx.bench.sizes
        if self.kind == "hidden":
            w1 = np.zeros((sz.n_hidden, sz.n_in))
            w2 = np.zeros((sz.n_out, sz.n_hidden))
            if k is not None:
                w1[k, :] = 1.0
                w2[:, k] = 1.0
            ctx.show("slm1", ctx.weight_levels("slm1", w1))
            ctx.show("slm2", ctx.weight_levels("slm2", w2))
        else:
            w2 = np.zeros((sz.n_out, sz.n_hidden))
            if k is not None:
                w2[k, :] = 1.0
            ctx.show("slm2", ctx.weight_levels("slm2", w2))


def _spot_images(ctx: CalContext, seq: _Sequence, n_avg, max_halvings: int = 24, x: float = 1.0,
                 max_shortenings: int = 12):
    """Spot images (on - off) of every neuron of a sequence: cam -> list of (image, variance).

    Saturation halves the mean input fill ``x`` (at most ``max_halvings`` times; below one DMD
    pixel per block fewer inputs are on, :func:`calibration.procedures.exposure.input_fills`,
    down to one pixel on one input), then quarters the exposure of the saturating cameras (at
    most ``max_shortenings`` times; the caller restores the exposures).
    """
    x_min = min_input(ctx)
    halvings = shortenings = 0
    while True:
        seq.setup(x)
        seq.light(None)
        off, _ = _state_images(ctx, seq.cams, n_avg)
        images = {c: [] for c in seq.cams}
        saturated = set()
        for k in range(seq.n):
            seq.light(k)
            on, peak = _state_images(ctx, seq.cams, n_avg)
            for c in seq.cams:
                if peak[c] >= ctx.saturation_adu(c):
                    saturated.add(c)
                img, var = spot_image(on[c], off[c])
                images[c].append((img, var))
                ctx.record(f"registration.{c}", img.astype(np.float32), units="adu (homodyne difference)",
                           neuron=k, input_amplitude=x)
            if saturated:
                break
        if not saturated:
            return images, x
        if halvings < max_halvings and 0.5 * x >= x_min * (1 - 1e-9):
            x *= 0.5
            halvings += 1
            continue
        shorter = False
        if shortenings < max_shortenings:
            for c in saturated:
                t = float(ctx.bench.cameras[c].exposure_s)
                shorter |= ctx.set_exposure(c, 0.25 * t) < t
            shortenings += 1
        if not shorter:
            exp = ", ".join(f"{c} {ctx.bench.cameras[c].exposure_s:.3g} s" for c in sorted(saturated))
            raise ValueError(f"registration: spots on {', '.join(sorted(saturated))} saturate even at input "
                             f"amplitude {x:.3g} and exposure {exp}; lower the laser power")


def _fit_spots(ctx: CalContext, cam: str, imgs) -> list:
    """Sub-pixel spot fits of one camera's spot images, flat-field corrected when the camera is calibrated."""
    return fit_spots(imgs, ctx.flat_map(cam), cam)


def measure_registration(ctx: CalContext, *, n_avg: int = 8, outlier_px: float = 1.0,
                         model: str = "auto", target_px: float = 0.01, max_factor: int = 16) -> list[Fit]:
    """Find every neuron's spot on every camera and fit the layout -> camera transforms.

    Parameters
    ----------
    ctx : calibration context (camera dark maps are not needed: images are differences).
    n_avg : frames averaged per LO phase and lighting state.
    target_px : centre standard error to aim for: a camera whose spots come out less precise
        (a weak signal, e.g. the backward probe) is measured again with up to ``max_factor``
        times as many frames.
    max_factor : see ``target_px``.
    outlier_px : RANSAC residual threshold (px).
    model : transform model ('auto', 'similarity', 'affine', 'homography').

    Returns
    -------
    [Fit('registration')]: quantities ``rotation_deg``, ``scale``, ``residual_px`` of the
    reference camera (cam_z1, else the camera with most spots) and per camera
    ``<cam>.rotation_deg``, ``<cam>.scale``, ``<cam>.residual_px``, ``<cam>.offset_row_px``,
    ``<cam>.offset_col_px``, ``<cam>.psf_sigma_px``, ``<cam>.roi_radius_px`` (3 PSF sigmas,
    at most 0.45 of the closest spot spacing); arrays ``centers_px.<cam>`` (n_spots, 2)
    measured centres (row, col), ``centers_stderr_px.<cam>``, ``transform.<cam>`` (2x3
    affine/similarity or 3x3 homography, layout -> camera).
    """
    bench = ctx.bench
    quantities: dict[str, Quantity] = {}
    arrays: dict[str, np.ndarray] = {}
    info: dict = {"models": {}, "input_amplitude": {}, "outliers": {}}
    xs, ys, yfit = [], [], []
    with ctx.timed("registration"), kept_exposures(ctx) as exposures:
        fits_by_cam = {}
        for kind in ("hidden", "output"):
            spots = _measure_spots(ctx, kind, n_avg, target_px, max_factor, exposures, info)
            for cam, spots_c in spots.items():
                src = bench.spots[cam].positions_px
                tf, q, arr, cam_info = register_camera(cam, spots_c, src, model=model, outlier_px=outlier_px)
                fits_by_cam[cam] = tf
                quantities.update(q)
                arrays.update(arr)
                info["models"][cam] = tf.model
                info["outliers"][cam] = np.flatnonzero(~tf.inliers).tolist()
                info.update(cam_info)
                xs.append(np.hypot(*src.T))
                ys.append(np.hypot(*tf.residuals_px.T))
                yfit.append(np.zeros(len(src)))
        ctx.blank_all()
        if not fits_by_cam:
            raise ValueError("registration: the bench has no cameras to register")
        ref = REFERENCE_REGISTRATION_CAMERA if REFERENCE_REGISTRATION_CAMERA in fits_by_cam else \
            max(fits_by_cam, key=lambda c: len(fits_by_cam[c].inliers))
        for q in ("rotation_deg", "scale", "residual_px"):
            quantities[q] = quantities[f"{ref}.{q}"]
        info["reference_camera"] = ref
    fit = Fit(name="registration", model=fits_by_cam[ref].model, quantities=quantities, arrays=arrays,
              x=np.concatenate(xs), y=np.concatenate(ys), y_fit=np.concatenate(yfit), info=info)
    ctx.add(fit)
    return [fit]


def _measure_spots(ctx: CalContext, kind: str, n_avg: int, target_px: float, max_factor: int, exposures: dict,
                   info: dict) -> dict:
    """Light every neuron of one sequence ('hidden' or 'output') and fit its spots on each camera.

    Cameras whose spots come out less precise than ``target_px`` are measured again with up to
    ``max_factor`` times as many frames.  Records the input amplitude, frames per LO phase and
    exposure (s, and relative to the starting ``exposures``) of each camera in ``info``.

    Returns
    -------
    dict : camera -> list of SpotFit (neuron order); empty when the bench has none of its cameras.
    """
    bench = ctx.bench
    seq = _Sequence(ctx, kind)
    if not seq.cams:
        return {}
    cams = list(seq.cams)
    n_cam = {c: int(n_avg) for c in cams}
    imgs, x = _spot_images(ctx, seq, n_cam)
    spots = {c: _fit_spots(ctx, c, imgs[c]) for c in cams}
    # weak spots (e.g. the backward probe on cam_back): more frames for a ~target_px centre error
    weak = {c: min(max_factor, math.ceil((max(s.stderr_px.max() for s in spots[c]) / target_px) ** 2))
            for c in cams}
    weak = {c: f for c, f in weak.items() if f > 1}
    if weak:
        seq.cams = list(weak)
        more, _ = _spot_images(ctx, seq, {c: n_cam[c] * f for c, f in weak.items()}, x=x)
        for c in weak:
            spots[c] = _fit_spots(ctx, c, more[c])
            n_cam[c] *= weak[c]
    for c in cams:
        info["input_amplitude"][c] = x
        info.setdefault("frames_per_phase", {})[c] = n_cam[c]
        info.setdefault("exposure_s", {})[c] = float(bench.cameras[c].exposure_s)
        info.setdefault("exposure_factor", {})[c] = float(bench.cameras[c].exposure_s) / exposures[c]
    return {c: spots[c] for c in cams}
