"""Deploy a calibration: the one place that turns calibration fits into what drives a bench.

Every consumer of a calibration file that shows frames on the panels or reads the cameras
goes through this module: the calibration procedures themselves (``CalContext``, with the
fits made so far), the bench as a training system (``BenchSystem``, via
``optwin.workflows.from_calibration``) and ``optwin push``.  So a weight pushed to the
panels is encoded exactly as training encoded it, and the readout of ``optwin compare``
uses the same ROIs, dark maps and scales as calibration measured them.

What a calibration file gives (fit names of the calibration contract):

======================  =====================================================================
panel encoders          ``slm`` (slm1), ``slm.slm2``, ``slm.probe_input``: inverse phase LUT
                        (``inverse_lut`` on the phase grid ``inverse_lut_phase_rad``), the
                        encoding the transfer tables were computed for (``info.encoder_dither``)
weight range            ``mvm1`` / ``mvm2`` quantity ``w_max``: the twin weight a panel
                        realises at full amplitude (the range the bench was trained with)
exposures               ``exposure`` quantities ``<camera>`` (s): the operating exposures the
                        readout scales were measured at
readouts                ``registration`` spot centres, ``readout.<cam>`` ROI radius and LO
                        amplitudes, ``camera``/``camera.<cam>`` dark maps, ``scale`` units
======================  =====================================================================

Problems raise :class:`DeployError`, a one-line ``ValueError`` that names the missing or
malformed part and the calibration step that makes it.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DeployError", "SLM_FIT_NAMES", "LAYER_SLMS", "MVM_FITS", "READOUT_CAMERAS", "SCALE_NAMES",
           "slm_fit_name", "inverse_lut", "encoder_dither", "panel_encoding", "phase_encoder", "weight_range",
           "weight_ranges", "layer_frame", "camera_exposures", "apply_exposures", "spot_readouts", "bench_calibration"]

#: phase panel -> name of its SLM fit
SLM_FIT_NAMES = {"slm1": "slm", "slm2": "slm.slm2", "probe_input": "slm.probe_input"}
#: the weight panels, layer by layer
LAYER_SLMS = ("slm1", "slm2")
#: the MVM fit of each layer (holds the layer's weight range ``w_max``)
MVM_FITS = ("mvm1", "mvm2")
#: cameras a bench system reads, in the order of the network planes
READOUT_CAMERAS = ("cam_z1", "cam_a1", "cam_out", "cam_back")
#: camera -> quantity of the ``scale`` fit: twin units per homodyne unit
SCALE_NAMES = {"cam_z1": "z1_per_h", "cam_a1": "a1_per_h", "cam_out": "z2_per_h", "cam_back": "delta1_per_h"}
#: camera whose EMVA fit is called 'camera' (the others are 'camera.<cam>')
REFERENCE_CAMERA = "cam_out"


class DeployError(ValueError):
    """A calibration cannot drive this bench (one line: what is missing and which step makes it)."""


def slm_fit_name(slm: str) -> str:
    """Name of the SLM fit of phase panel ``slm`` (``'slm'`` for slm1)."""
    try:
        return SLM_FIT_NAMES[slm]
    except KeyError:
        raise DeployError(f"{slm!r} is not a phase panel ({', '.join(SLM_FIT_NAMES)})") from None


def camera_fit_name(cam: str) -> str:
    """Name of the camera fit holding ``cam``'s dark map: 'camera' for the reference camera."""
    return "camera" if cam == REFERENCE_CAMERA else f"camera.{cam}"


def _fit(fits: dict, name: str, step: str):
    fit = fits.get(name)
    if fit is None:
        raise DeployError(f"calibration lacks '{name}'; run 'optwin calibrate --only {step}' first")
    return fit


# ---------------------------------------------------------------------------------------------
# panel encoders
# ---------------------------------------------------------------------------------------------
def inverse_lut(fit, bit_depth: int, name: str):
    """The calibrated inverse phase LUT of an SLM fit, or None when the fit has none.

    Parameters
    ----------
    fit : the panel's SLM fit (or None).
    bit_depth : the panel's bit depth; a table for another bit depth raises DeployError.
    name : panel name used in messages.

    Returns
    -------
    :class:`hwio.response.InverseLUT` or None.
    """
    from hwio.response import InverseLUT
    if fit is None or "inverse_lut" not in fit.arrays or "inverse_lut_phase_rad" not in fit.arrays:
        return None
    levels = np.asarray(fit.arrays["inverse_lut"])
    fitted_bits = fit.info.get("bit_depth")
    if fitted_bits is not None and int(fitted_bits) != int(bit_depth):
        raise DeployError(f"calibration '{fit.name}' is for a {int(fitted_bits)}-bit panel but {name} is "
                          f"{int(bit_depth)}-bit; calibrate this panel")
    if levels.size and (np.min(levels) < 0 or np.max(levels) > 2 ** int(bit_depth) - 1):
        raise DeployError(f"calibration '{fit.name}.inverse_lut' holds levels up to {int(np.max(levels))}, "
                          f"beyond the {int(bit_depth)}-bit range of {name}; calibrate this panel")
    try:
        return InverseLUT.from_grid(levels, np.asarray(fit.arrays["inverse_lut_phase_rad"]),
                                    bit_depth=int(bit_depth), name=name)
    except (ValueError, TypeError) as exc:
        raise DeployError(f"calibration '{fit.name}': unusable inverse LUT ({exc}); "
                          f"re-run 'optwin calibrate --only slm'") from None


def encoder_dither(fit, calibrated: bool) -> bool:
    """Whether a panel's encoder dithers pixel pairs between neighbouring levels.

    The file decides when it says (``info.encoder_dither``: the encoding its amplitude
    transfer table was computed for).  Older files with a transfer table but no flag were
    made with plain encoding.  Otherwise dithering follows the LUT: it splits a target
    between neighbouring levels, which only helps once the LUT is calibrated.
    """
    if fit is not None and "encoder_dither" in fit.info:
        return bool(fit.info["encoder_dither"])
    if fit is not None and "amplitude_transfer" in fit.arrays:
        return False
    return bool(calibrated)


def panel_encoding(bench, slm: str) -> dict:
    """The amplitude encoding the bench file gives phase panel ``slm``: ``{"encoding": "double_phase"}``
    (default) or ``{"encoding": "blazed", "grating_period_px": p}`` (docs/encodings.md)."""
    dev = bench.config.get("devices", {}).get(slm, {})
    if dev.get("encoding", "double_phase") == "blazed":
        return {"encoding": "blazed", "grating_period_px": int(dev["grating_period_px"])}
    return {"encoding": "double_phase"}


def _fit_encoding(fit, name: str, bench, slm: str) -> dict:
    """The encoding a fit records (``info['encoding']``; double-phase when absent), checked against the bench."""
    want = panel_encoding(bench, slm)
    if fit is None or "encoding" not in fit.info:
        # a transfer table without a recorded encoding was made for double-phase; a bare LUT fits any
        got = {"encoding": "double_phase"} if fit is not None and "amplitude_transfer" in fit.arrays else want
    else:
        got = {"encoding": str(fit.info["encoding"])}
        if got["encoding"] == "blazed":
            got["grating_period_px"] = int(fit.info.get("grating_period_px", 0))
    if got != want:
        def show(e):
            return e["encoding"] + (f" (period {e['grating_period_px']} px)" if "grating_period_px" in e else "")
        raise DeployError(f"calibration '{name}' was made with {show(got)} encoding but bench {bench.name!r} gives "
                          f"{slm} {show(want)}; restore the bench's encoding or re-run 'optwin calibrate --only slm'")
    return got


def phase_encoder(fits: dict, bench, slm: str, fallback_lut=None):
    """The :class:`hwio.encoding.PhaseEncoder` of phase panel ``slm`` as the fits describe it.

    Parameters
    ----------
    fits : dict fit name -> Fit (a calibration file's ``fits`` or a calibration in progress).
    bench : the opened bench (layouts, panel shapes and bit depths).
    slm : 'slm1', 'slm2' or 'probe_input'.
    fallback_lut : InverseLUT to use when the fits hold no calibrated LUT for this panel
        (plain encoding); None: such a panel raises DeployError.

    Returns
    -------
    (encoder, source) : the encoder and a one-line description of its LUT (and wavefront map).

    Notes
    -----
    A panel whose bench entry names a ``wavefront_map`` (:mod:`hwio.wavefront`) gets that map
    (``PhaseEncoder(wavefront_rad=...)``), and ``encoder.wavefront_record`` holds what a fit
    should record about it (``wavefront_map_path``, ``wavefront_map_sha256``, format and
    scaling; None without a map).  A panel whose fit records a phase range short of 2 pi
    (``info['double_phase']``, :func:`calibration.slm_fit.double_phase_range`) encodes with the
    reduced amplitude range and offset phase it gives (``encoder.amplitude_max``,
    ``encoder.phase_offset_rad``).  A fit whose ``info`` records ``wavefront_map_sha256``
    (None: made without a map) must match the bench's map, else DeployError.  The amplitude
    encoding is the one the fit records (``info['encoding']``, ``info['grating_period_px']``;
    files without it: double-phase), which must be the bench's (:func:`panel_encoding`):
    ``blazed`` builds a :class:`hwio.encoding.BlazedEncoder`.
    """
    from hwio.encoding import BlazedEncoder, PhaseEncoder
    from hwio.response import DoublePhaseRange
    from hwio.wavefront import bench_wavefront
    name = slm_fit_name(slm)
    if slm not in bench.slms or slm not in bench.layouts:
        raise DeployError(f"bench {bench.name!r} has no phase panel {slm!r} with a block layout")
    panel = bench.slms[slm]
    fit = fits.get(name)
    lut = inverse_lut(fit, panel.bit_depth, slm)
    calibrated = lut is not None
    if lut is None:
        if fallback_lut is None:
            raise DeployError(f"calibration '{name}' has no inverse LUT of {slm}; "
                              f"run 'optwin calibrate --only slm' (or fit a lab curve with --out)")
        lut, source = fallback_lut, "uncalibrated"
    else:
        source = f"calibrated ('{name}', {lut.n_bins} phase bins)"
    try:
        wavefront, record = bench_wavefront(bench, slm)
    except ValueError as exc:
        raise DeployError(f"{exc}") from None
    sha = record["wavefront_map_sha256"] if record else None
    if fit is not None and "wavefront_map_sha256" in fit.info and fit.info["wavefront_map_sha256"] != sha:
        made = fit.info.get("wavefront_map_path") or "no wavefront map"
        raise DeployError(f"calibration '{name}' was made with {made} but bench {bench.name!r} gives {slm} "
                          f"{record['wavefront_map_path'] if record else 'no wavefront map'} (sha256 differs); "
                          f"restore the map or re-run 'optwin calibrate --only slm'")
    # a panel short of 2 pi: the reduced amplitude range and offset phase the fit records
    record_dp = fit.info.get("double_phase") if calibrated else None
    try:
        double_phase = DoublePhaseRange.from_dict(record_dp) if record_dp else None
    except (KeyError, TypeError, ValueError) as exc:
        raise DeployError(f"calibration '{name}.info.double_phase' is malformed ({exc}); "
                          f"re-run 'optwin calibrate --only slm'") from None
    encoding = _fit_encoding(fit if calibrated else None, name, bench, slm)
    if encoding["encoding"] == "blazed":
        enc = BlazedEncoder(bench.layouts[slm], panel.shape, lut, encoding["grating_period_px"], name=slm,
                            wavefront_rad=wavefront, double_phase=double_phase)
        source += f", blazed grating {encoding['grating_period_px']} px (first order)"
    else:
        enc = PhaseEncoder(bench.layouts[slm], panel.shape, lut, name=slm, dither=encoder_dither(fit, calibrated),
                           wavefront_rad=wavefront, double_phase=double_phase)
    enc.wavefront_record = record
    if record:
        source += f", wavefront map {record['wavefront_map_path']} (sha256 {sha[:12]})"
    return enc, source


def weight_range(fits: dict, layer: int) -> float | None:
    """Twin weight realised at full panel amplitude for ``layer`` (0 or 1), or None if not calibrated."""
    fit = fits.get(MVM_FITS[layer])
    if fit is None or "w_max" not in fit.quantities:
        return None
    w = float(fit.quantities["w_max"].value)
    if not (math.isfinite(w) and w > 0):
        raise DeployError(f"calibration '{MVM_FITS[layer]}.w_max' is {w}, not a positive weight; "
                          f"re-run 'optwin calibrate --only mvm'")
    return w


def weight_ranges(fits: dict) -> list[float]:
    """The weight range ``w_max`` of every layer; DeployError when the MVMs are not calibrated."""
    out = []
    for k, name in enumerate(MVM_FITS):
        w = weight_range(fits, k)
        if w is None:
            raise DeployError(f"calibration lacks '{name}' (the weight range of layer {k + 1}); "
                              f"run 'optwin calibrate --only mvm' first")
        out.append(w)
    return out


def layer_frame(encoder, weights, w_max: float) -> tuple[np.ndarray, float]:
    """Level frame showing one layer's weights at the weight range ``w_max``.

    Weights beyond +-w_max are clipped (the panel realises no more), exactly as the bench
    system does during training.

    Returns
    -------
    (frame, clipped_fraction) : the panel's level frame and the share of weights clipped.
    """
    w = np.asarray(weights, dtype=np.float64)
    clipped = float(np.mean(np.abs(w) > w_max)) if w.size else 0.0
    return encoder.encode(np.clip(w, -w_max, w_max), w_max=w_max), clipped


# ---------------------------------------------------------------------------------------------
# cameras
# ---------------------------------------------------------------------------------------------
def camera_exposures(fits: dict) -> dict:
    """Operating exposure per camera recorded by calibration (s); empty when not recorded."""
    fit = fits.get("exposure")
    if fit is None:
        return {}
    out = {}
    for cam, q in fit.quantities.items():
        t = float(q.value)
        if not (math.isfinite(t) and t > 0):
            raise DeployError(f"calibration 'exposure.{cam}' is {t} s, not a positive exposure; "
                              f"re-run the calibration")
        out[cam] = t
    return out


def apply_exposures(bench, fits: dict) -> dict:
    """Set every camera of ``bench`` to the operating exposure calibration recorded.

    Readout scales (ADU summed over a spot) hold at the exposure they were measured at, so a
    bench driven with a calibration must run its cameras there.  Returns camera -> exposure
    the camera reports (s).
    """
    applied = {}
    for cam, t in camera_exposures(fits).items():
        camera = bench.cameras.get(cam)
        if camera is None:
            continue
        camera.exposure_s = t
        applied[cam] = float(camera.exposure_s)
        if not math.isclose(applied[cam], t, rel_tol=0.02):
            raise DeployError(f"{cam}: calibrated at exposure {t:.6g} s but the camera sets {applied[cam]:.6g} s; "
                              f"check its exposure limits")
    return applied


def spot_readouts(fits: dict, bench, cameras=READOUT_CAMERAS) -> tuple[dict, dict, dict]:
    """Readout of every camera: ``(SpotReadout per camera, |LO| per spot, twin units per homodyne unit)``."""
    from hwio.readout import SpotReadout
    reg = _fit(fits, "registration", "registration")
    scale_fit = _fit(fits, "scale", "absorber")
    readouts, lo, scales = {}, {}, {}
    for cam in cameras:
        centers = reg.arrays.get(f"centers_px.{cam}")
        if centers is None:
            raise DeployError(f"calibration lacks the spot centres of {cam}; "
                              f"run 'optwin calibrate --only registration'")
        ro = _fit(fits, f"readout.{cam}", "readout")
        if cam not in bench.cameras:
            raise DeployError(f"bench {bench.name!r} has no camera {cam!r}, which the calibration reads")
        camera = bench.cameras[cam]
        dark_fit = fits.get(camera_fit_name(cam))
        dark = dark_fit.arrays.get("offset_map_adu") if dark_fit is not None else None
        if dark is not None and np.shape(dark) != tuple(camera.shape):
            raise DeployError(f"calibration '{dark_fit.name}.offset_map_adu' is {np.shape(dark)}, camera {cam} is "
                              f"{tuple(camera.shape)}; calibrate this camera")
        radius = ro.quantities.get("roi_radius_px")
        readouts[cam] = SpotReadout(np.asarray(centers), camera.shape,
                                    radius_px=float(radius.value) if radius is not None else 3.0,
                                    dark_adu=np.asarray(dark) if dark is not None else 0.0, name=cam)
        if "lo_amplitude" not in ro.arrays:
            raise DeployError(f"calibration 'readout.{cam}' has no LO amplitudes; run 'optwin calibrate --only readout'")
        lo[cam] = np.asarray(ro.arrays["lo_amplitude"], dtype=float)
        q = scale_fit.quantities.get(SCALE_NAMES[cam])
        if q is None:
            raise DeployError(f"calibration 'scale' lacks {SCALE_NAMES[cam]}; "
                              f"re-run 'optwin calibrate --only absorber,mvm'")
        scales[cam] = float(q.value)
    return readouts, lo, scales


# ---------------------------------------------------------------------------------------------
# the whole bench
# ---------------------------------------------------------------------------------------------
def bench_calibration(fits: dict, bench, probe_fraction: float = 0.5):
    """The :class:`hwio.bench_system.BenchCalibration` of a complete calibration.

    Also sets the cameras to their calibrated operating exposures (:func:`apply_exposures`).
    """
    from hwio.bench_system import BenchCalibration
    luts, dither, encoders = {}, {}, {}
    for slm in SLM_FIT_NAMES:
        enc, _ = phase_encoder(fits, bench, slm)
        luts[slm], dither[slm], encoders[slm] = enc.lut, enc.dither, enc
    readouts, lo, scales = spot_readouts(fits, bench)
    w_max = weight_ranges(fits)
    exposures = apply_exposures(bench, fits)
    return BenchCalibration(luts=luts, readouts=readouts, lo_amplitudes=lo, scales=scales, w_max=w_max,
                            probe_fraction=probe_fraction, dither=dither, encoders=encoders,
                            info={"exposures_s": exposures})
