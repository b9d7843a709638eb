"""Helpers for the simulated-bench tests: encode frames from the TRUE panel response and read
spots from camera images.  Written independently of hwio.sim (tests compare the two)."""
from __future__ import annotations

import math

import numpy as np

from hwio.sim.testing import open_with, truth_of

# Switch off everything that is not under test.
CLEAN = {
    "faults": {"camera_timeout_rate": 0.0, "dropped_frame_rate": 0.0, "stale_frame_rate": 0.0,
               "slm_write_failure_rate": 0.0},
    "drift": {"laser_power_per_hour": 0.0, "alpha0_per_hour": 0.0, "power_jitter": 0.0},
}


def deep_update(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def open_clean(name="sim", truth=None, **top):
    """Open a bench without faults or drift, with extra truth overrides."""
    t = deep_update(CLEAN, truth or {})
    return open_with(name, {"truth": t, **top})


def true_phase_table(truth, slm_name, bit_depth):
    s = truth.slms[slm_name]
    if s.phase_table_rad is not None:
        return np.asarray(s.phase_table_rad)
    lv = np.arange(2 ** bit_depth) / (2 ** bit_depth - 1)
    return s.phase_range_rad * lv ** s.gamma


def level_for_phase(table, phase):
    """Level whose phase is nearest to ``phase`` on the circle (vectorised)."""
    d = np.angle(np.exp(1j * (np.asarray(phase)[..., None] - table[None, :])))
    return np.argmin(np.abs(d), axis=-1)


def double_phase_frame(bench, slm_name, weights, table=None):
    """Level frame realising ``weights`` (|w| <= 1) by checkerboard double-phase encoding.

    Every pixel outside the active blocks gets a 0/pi checkerboard (zero mean field).
    """
    slm = bench.slms[slm_name]
    layout = bench.layouts[slm_name]
    if table is None:
        table = true_phase_table(truth_of(bench), slm_name, slm.bit_depth)
    w = np.clip(np.asarray(weights, float), -1, 1)
    rr, cc = np.indices(slm.shape)
    checker = ((rr + cc) % 2) * 2 - 1            # -1 / +1
    l0, lpi = level_for_phase(table, np.array([0.0, math.pi]))
    frame = np.where(checker > 0, l0, lpi).astype(np.int64)
    for i in range(layout.n_rows):
        for j in range(layout.n_cols):
            s = 0.0 if w[i, j] >= 0 else math.pi
            theta = math.acos(abs(w[i, j]))
            lp, lm = level_for_phase(table, np.array([s + theta, s - theta]))
            sl = layout.active_slices(i, j)
            frame[sl] = np.where(checker[sl] > 0, lp, lm)
    return frame


def input_frame(bench, x):
    """DMD frame with fill fraction x_j in block j (rounded to whole pixels)."""
    slm = bench.slms["input"]
    layout = bench.layouts["input"]
    frame = np.zeros(slm.shape, np.int64)
    for j, xj in enumerate(x):
        sl = layout.active_slices(0, j)
        block = frame[sl]
        n_on = int(round(float(xj) * block.size))
        flat = np.zeros(block.size, np.int64)
        flat[:n_on] = 1
        frame[sl] = flat.reshape(block.shape)
    return frame


def realised_fill(bench, x):
    layout = bench.layouts["input"]
    n = (layout.block_px[0] - 2 * layout.guard_px) * (layout.block_px[1] - 2 * layout.guard_px)
    return np.round(np.asarray(x, float) * n) / n


def spot_sums(image, positions, radius):
    """Sum of ADU in discs of ``radius`` px around ``positions`` (n, 2)."""
    rr, cc = np.indices(image.shape)
    out = []
    for r, c in positions:
        m = (rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2
        out.append((image[m].astype(float).sum(), int(m.sum())))
    return np.array([o[0] for o in out]), np.array([o[1] for o in out])


def set_lo(bench, level):
    lo = bench.slms["lo"]
    lo.show(np.full(lo.shape, level, dtype=np.int64))


def mean_frame(camera, n):
    return np.mean([camera.grab().image.astype(float) for _ in range(n)], axis=0)


def homodyne_fields(bench, cams, n_avg=4, blocked=None):
    """Signed fields (cell units) at the spots of ``cams`` from LO phases 0 and pi.

    ``blocked`` : dict cam -> LO-only spot sums (signal blocked), measured by the caller.
    Uses the truth only for the conversion photons -> ADU (what calibration measures).
    """
    half = 2 ** bench.slms["lo"].bit_depth // 2
    sums = {}
    for level in (0, half):
        set_lo(bench, level)
        for cam in cams:
            img = mean_frame(bench.cameras[cam], n_avg)
            sums[(cam, level)] = spot_powers(bench, cam, img)
    out = {}
    for cam in cams:
        conv = adu_per_unit_power(bench, cam)
        d = sums[(cam, 0)] - sums[(cam, half)]
        out[cam] = d / (4.0 * np.sqrt(blocked[cam] * conv))
    return out


def radius_for(truth, cam):
    """Spot-sum radius (px): 4.5 PSF sigmas, but at most half the smallest spot spacing on the camera.

    Closely packed spots (hidden layers of 12-16 spots) would otherwise sum part of their
    neighbours' light, which biases every homodyne field by the neighbours' fields.
    """
    r = 4.5 * truth.cameras[cam].psf_sigma_px
    pos = np.asarray(truth.realised["spot_positions_px"][cam], dtype=float)
    if len(pos) > 1:
        d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
        r = min(r, 0.5 * float(d[~np.eye(len(pos), dtype=bool)].min()))
    return r


def captured_fraction(truth, cam, shape):
    """Share of each spot's light inside its ``radius_for`` disc: Gaussian PSF integrated over pixels.

    Independent of hwio.sim: 1-D pixel integrals 0.5 (erf((p + 0.5 - c) / (sqrt 2 sigma)) - erf(...)).
    """
    from scipy.special import erf
    sigma = truth.cameras[cam].psf_sigma_px
    radius = radius_for(truth, cam)
    rr, cc = np.indices(shape)
    out = []
    for r, c in np.asarray(truth.realised["spot_positions_px"][cam], dtype=float):
        def share(p, centre):
            return 0.5 * (erf((p + 0.5 - centre) / (math.sqrt(2.0) * sigma))
                          - erf((p - 0.5 - centre) / (math.sqrt(2.0) * sigma)))
        w = share(rr, r) * share(cc, c)
        out.append(w[(rr - r) ** 2 + (cc - c) ** 2 <= radius ** 2].sum())
    return np.array(out)


def spot_powers(bench, cam, img):
    """Dark-subtracted spot sums (ADU) of a mean image, scaled to the whole spot (ROI share removed)."""
    t = truth_of(bench)
    s, npx = spot_sums(img, t.realised["spot_positions_px"][cam], radius_for(t, cam))
    return (s - npx * t.cameras[cam].dark_offset_adu) / captured_fraction(t, cam, img.shape)


def adu_per_unit_power(bench, cam):
    """ADU summed over a spot per unit |E|^2 (from the truth: power scale, tap, exposure, QE, gain)."""
    t = truth_of(bench)
    c = t.cameras[cam]
    return (t.optics.power_scale * t.optics.tap[cam] * bench.cameras[cam].exposure_s * c.qe
            * c.gain_adu_per_e)


def blocked_n_avg(bench, cams, rel_noise=0.003):
    """Frames to average so the LO-only power of the dimmest spot has ``rel_noise`` shot noise (4..64).

    Every homodyne field is divided by sqrt(blocked power), so this noise is a relative error on
    every measured field; dim LO taps (hidden-layer cameras) need more frames.
    """
    t = truth_of(bench)
    n = 4
    for cam in cams:
        c = t.cameras[cam]
        lo2 = float(np.min(t.realised["lo_amplitude"][cam] ** 2))
        e = c.qe * t.optics.power_scale * t.optics.tap[cam] * bench.cameras[cam].exposure_s * lo2
        if e > 0:
            n = max(n, math.ceil(1.0 / (rel_noise ** 2 * e)))
    return min(n, 64)


def blocked_sums(bench, cams, n_avg=None):
    """LO-only spot powers (ADU, offset removed, whole spot) with the signal blocked (input dark).

    ``n_avg`` : frames per camera (default: ``blocked_n_avg``).
    """
    if n_avg is None:
        n_avg = blocked_n_avg(bench, cams)
    bench.slms["input"].show(np.zeros(bench.slms["input"].shape, np.int64))
    bench.slms["probe_input"].show(double_phase_frame(bench, "probe_input", np.zeros((1, bench.sizes.n_out))))
    set_lo(bench, 0)
    out = {}
    for cam in cams:
        img = mean_frame(bench.cameras[cam], n_avg)
        out[cam] = spot_powers(bench, cam, img)
    return out


def realised_elements(bench, slm_name, frame):
    """Block means of exp(i phase(level)) with the TRUE table (no crosstalk): what a frame realises."""
    t = truth_of(bench)
    table = true_phase_table(t, slm_name, bench.slms[slm_name].bit_depth)
    field = np.exp(1j * table[np.asarray(frame)])
    lay = bench.layouts[slm_name]
    return np.array([[field[lay.active_slices(i, j)].mean() for j in range(lay.n_cols)]
                     for i in range(lay.n_rows)])
