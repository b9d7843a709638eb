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

:func:`calibration.registration_fit.find_spot` gives each centre (sub-pixel, with standard
errors) and the PSF sigma; :func:`calibration.registration_fit.fit_transform` fits the
layout -> camera transform (similarity below 3 non-collinear spots, affine, or homography
when significantly better; RANSAC against outliers).
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.procedures.exposure import input_fills, kept_exposures, min_input
from calibration.quantities import Fit, Quantity
from calibration.registration_fit import find_spot, fit_transform

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


def _spot_image(on: dict, off: dict, smooth_px: float = 1.0):
    """(image, variance) of one neuron's spot from the on/off state images.

    With an LO: the homodyne difference images dI, dQ projected on their dominant direction
    (the interference term ``4 |LO| |E_on - E_off|`` spread by the spot), else the intensity
    difference.  The variance map is the shot-noise model ``a + b T`` (T: the summed frame
    means entering the image, a and b fitted to the frame scatter of every pixel), which is
    smooth where the raw scatter of a few frames is not.
    """
    from scipy.ndimage import gaussian_filter
    mo, vo, mf, vf = on["m"], on["v"], off["m"], off["v"]
    if on["lo"]:
        di, dq = (mo[0] - mo[2]) - (mf[0] - mf[2]), (mo[1] - mo[3]) - (mf[1] - mf[3])
        si, sq = gaussian_filter(di, smooth_px), gaussian_filter(dq, smooth_px)
        k = np.unravel_index(int(np.argmax(si ** 2 + sq ** 2)), di.shape)
        phi = math.atan2(sq[k], si[k])
        ci, cq = math.cos(phi) ** 2, math.sin(phi) ** 2
        img = math.cos(phi) * di + math.sin(phi) * dq
        raw = ci * (vo[0] + vo[2] + vf[0] + vf[2]) + cq * (vo[1] + vo[3] + vf[1] + vf[3])
        total = ci * (mo[0] + mo[2] + mf[0] + mf[2]) + cq * (mo[1] + mo[3] + mf[1] + mf[3])
    else:
        img = sum(mo) / len(mo) - sum(mf) / len(mf)
        raw = (sum(vo) + sum(vf)) / len(mo) ** 2
        total = (sum(mo) + sum(mf)) / len(mo) ** 2
    a = np.column_stack([np.ones(total.size), total.ravel()])
    coef = np.linalg.lstsq(a, raw.ravel(), rcond=None)[0]
    var = coef[0] + max(coef[1], 0.0) * total
    floor = max(1e-6 * float(np.median(raw)), 1e-12)
    return img, np.maximum(var, floor)


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
                img, var = _spot_image(on[c], off[c])
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
    """Sub-pixel spot fits of one camera's spot images (flat-field corrected when calibrated)."""
    flat = ctx.flat_map(cam)
    if flat is not None:     # flat-field correction: the pixel response pattern biases centres
        imgs = [(img / flat, var / flat ** 2) for img, var in imgs]
    spots = []
    for k, (img, var) in enumerate(imgs):
        try:
            spots.append(find_spot(img, variance=var))
        except ValueError as exc:
            raise ValueError(f"registration: neuron {k} on {cam}: {exc}") from None
    # refit with the camera's median sigma as start (window 3.5 sigma)
    sig = float(np.median([s.sigma_px for s in spots]))
    return [find_spot(img, s.center_px, sigma_px=sig, variance=var) for (img, var), s in zip(imgs, spots)]


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
            seq = _Sequence(ctx, kind)
            if not seq.cams:
                continue
            n_cam = {c: int(n_avg) for c in seq.cams}
            imgs, x = _spot_images(ctx, seq, n_cam)
            spots = {c: _fit_spots(ctx, c, imgs[c]) for c in seq.cams}
            # weak spots (e.g. the backward probe on cam_back): more frames for a ~target_px centre error
            weak = {c: min(max_factor, math.ceil((max(s.stderr_px.max() for s in spots[c]) / target_px) ** 2))
                    for c in seq.cams}
            weak = {c: f for c, f in weak.items() if f > 1}
            if weak:
                seq.cams = list(weak)
                more, _ = _spot_images(ctx, seq, {c: n_cam[c] * f for c, f in weak.items()}, x=x)
                for c in weak:
                    spots[c] = _fit_spots(ctx, c, more[c])
                    n_cam[c] *= weak[c]
                seq.cams = [c for c in (_HIDDEN_CAMS if kind == "hidden" else _OUTPUT_CAMS) if c in bench.cameras]
            for c in seq.cams:
                info["input_amplitude"][c] = x
                info.setdefault("frames_per_phase", {})[c] = n_cam[c]
                info.setdefault("exposure_s", {})[c] = float(bench.cameras[c].exposure_s)
                info.setdefault("exposure_factor", {})[c] = float(bench.cameras[c].exposure_s) / exposures[c]
            for cam in seq.cams:
                spots_c = spots[cam]
                centers = np.array([s.center_px for s in spots_c])
                stderr = np.maximum(np.array([s.stderr_px for s in spots_c]), 1e-4)
                src = bench.spots[cam].positions_px
                tf = fit_transform(src, centers, stderr, model=model, outlier_px=outlier_px)
                fits_by_cam[cam] = tf
                sig = float(np.median([s.sigma_px for s in spots_c]))
                sig_se = float(np.median([s.sigma_stderr_px for s in spots_c])) / math.sqrt(len(spots_c))
                if len(centers) > 1:
                    d = np.hypot(*(centers[:, None, :] - centers[None, :, :]).transpose(2, 0, 1))
                    closest = float(np.min(d[np.triu_indices(len(centers), 1)]))
                else:
                    closest = np.inf
                roi = float(min(3.0 * sig, 0.45 * closest))
                se = tf.stderr
                res_se = tf.residual_px / math.sqrt(2 * tf.dof) if tf.dof > 0 else float("nan")
                quantities.update({
                    f"{cam}.rotation_deg": Quantity(tf.rotation_deg, se["rotation_deg"], "deg"),
                    f"{cam}.scale": Quantity(tf.scale, se["scale"], ""),
                    f"{cam}.offset_row_px": Quantity(float(tf.offset_px[0]), se["offset_row_px"], "px"),
                    f"{cam}.offset_col_px": Quantity(float(tf.offset_px[1]), se["offset_col_px"], "px"),
                    f"{cam}.residual_px": Quantity(tf.residual_px, res_se, "px"),
                    f"{cam}.psf_sigma_px": Quantity(sig, sig_se, "px"),
                    f"{cam}.roi_radius_px": Quantity(roi, float("nan"), "px"),
                })
                arrays[f"centers_px.{cam}"] = centers
                arrays[f"centers_stderr_px.{cam}"] = stderr
                arrays[f"transform.{cam}"] = tf.matrix if tf.model == "homography" else tf.matrix[:2, :]
                info["models"][cam] = tf.model
                info["outliers"][cam] = np.flatnonzero(~tf.inliers).tolist()
                info[f"{cam}.fit"] = {k: v for k, v in tf.info.items()}
                info[f"{cam}.redchi"] = tf.redchi
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
