"""EMVA 1288 camera fit against an independent camera simulator with known truth."""
from dataclasses import dataclass

import numpy as np
import pytest

from calibration.camera_fit import CameraPoint, fit_camera, temporal_stats


@dataclass
class Truth:
    gain: float          # DN / e-
    read_e: float        # e- rms
    offset: float        # DN
    dsnu: float          # DN rms, dark fixed pattern
    qe: float
    full_well_e: float
    bits: int
    prnu: float          # fraction rms
    dark_current: float  # e- / s
    n_hot: int = 5
    n_dead: int = 5


class EmvaCamera:
    """Linear camera after the EMVA 1288 model: photons -> Poisson electrons (QE x PRNU) plus dark
    current electrons, Gaussian read noise, full-well clip, gain, offset + DSNU, rounding, ADC clip."""

    def __init__(self, truth: Truth, shape=(128, 128), seed=0):
        self.t = truth
        self.rng = np.random.default_rng(seed)
        self.shape = shape
        self.prnu_map = 1.0 + truth.prnu * self.rng.standard_normal(shape)
        self.offset_map = truth.offset + truth.dsnu * self.rng.standard_normal(shape)
        self.dark_map = np.full(shape, truth.dark_current)
        flat = self.rng.choice(shape[0] * shape[1], truth.n_hot + truth.n_dead, replace=False)
        self.hot_idx = np.unravel_index(flat[:truth.n_hot], shape)
        self.dead_idx = np.unravel_index(flat[truth.n_hot:], shape)
        self.dark_map[self.hot_idx] = truth.dark_current + 4e5          # hot: huge dark current
        self.prnu_map[self.dead_idx] = 0.05                            # dead: 5 % response

    def frames(self, photons, exposure_s, n):
        t = self.t
        mean_e = t.qe * photons * self.prnu_map + self.dark_map * exposure_s
        e = self.rng.poisson(np.broadcast_to(mean_e, (n,) + self.shape)).astype(float)
        e += t.read_e * self.rng.standard_normal(e.shape)
        e = np.minimum(e, t.full_well_e)
        dn = np.round(t.gain * e + self.offset_map)
        return np.clip(dn, 0, 2 ** t.bits - 1).astype(np.uint16)

    def series(self, photons, exposures, n=4):
        return [CameraPoint(self.frames(p, s, n), self.frames(0.0, s, n), s, p, name=f"p{i}")
                for i, (p, s) in enumerate(zip(photons, exposures))]


# truth A: full-well limited, exposure sweep at constant light, dark current
TRUTH_A = Truth(gain=0.42, read_e=7.5, offset=64, dsnu=1.5, qe=0.62, full_well_e=9000, bits=12,
                prnu=0.012, dark_current=300.0)
# truth B: ADC limited (gain 2.6 DN/e-, 12 bit), light sweep at constant exposure
TRUTH_B = Truth(gain=2.6, read_e=3.2, offset=120, dsnu=0.8, qe=0.45, full_well_e=20000, bits=12,
                prnu=0.025, dark_current=0.0)


def _series_a(cam):
    exposures = np.geomspace(1e-3, 0.05, 26)
    photons = 9000 / 0.62 * 1.4 * exposures / exposures[-1]
    return cam.series(photons, exposures)


def _series_b(cam):
    photons = np.linspace(0.0, 1.5 * (4095 - 120) / 2.6 / 0.45, 24)[1:]
    return cam.series(photons, np.full(photons.size, 0.01))


@pytest.fixture(scope="module", params=["A", "B"])
def case(request):
    truth = TRUTH_A if request.param == "A" else TRUTH_B
    cam = EmvaCamera(truth, seed=1 if request.param == "A" else 2)
    points = _series_a(cam) if request.param == "A" else _series_b(cam)
    return truth, cam, points, fit_camera(points, bit_depth=truth.bits)


def _ok(q, truth, rel):
    assert abs(q.value - truth) <= rel * truth, (q, truth)
    assert q.within(truth, 3.0), (q, truth)


def test_gain_and_read_noise_recovered(case):
    truth, _, _, fit = case
    q = fit.quantities
    _ok(q["gain_adu_per_e"], truth.gain, 0.02)
    _ok(q["read_noise_e"], truth.read_e, 0.05)
    assert fit.name == "camera" and fit.model == "emva1288"
    for name in ("gain_adu_per_e", "read_noise_e", "dark_offset_adu", "saturation_e",
                 "linearity_error_pct", "prnu_pct", "quantum_efficiency"):
        assert np.isfinite(q[name].value) and np.isfinite(q[name].stderr) and q[name].stderr > 0, name


def test_offset_qe_prnu_and_saturation(case):
    truth, cam, _, fit = case
    q = fit.quantities
    good = fit.arrays["defect_mask"] == 0
    true_offset = cam.offset_map[good].mean()
    _ok(q["dark_offset_adu"], true_offset, 0.01)
    _ok(q["quantum_efficiency"], truth.qe, 0.03)
    true_prnu = 100 * cam.prnu_map[good].std() / cam.prnu_map[good].mean()
    assert q["prnu_pct"].value == pytest.approx(true_prnu, rel=0.1)
    assert q["prnu_pct"].within(true_prnu, 3)
    # EMVA saturation capacity lies a little below the hard limit (PRNU spreads the clip)
    limit = min(truth.full_well_e, (2 ** truth.bits - 1 - truth.offset) / truth.gain)
    # (and the geometric series of A samples it in 17 % steps)
    assert 0.8 * limit < q["saturation_e"].value <= 1.02 * limit
    assert fit.info["saturation_reached"]
    # an ideal linear camera: linearity error well below 1 %
    assert 0 <= q["linearity_error_pct"].value < 1.0
    dark_mean_noise = truth.gain * truth.read_e / 2          # mean of 4 dark frames, DN
    dark_signal = truth.gain * truth.dark_current * 1e-3     # shortest exposure A: 1 ms
    err = fit.arrays["offset_map_adu"][good] - cam.offset_map[good] - dark_signal
    assert np.sqrt(np.mean(err ** 2)) == pytest.approx(np.hypot(dark_mean_noise, 0.29), rel=0.1)
    prnu_err = fit.arrays["prnu_map"][good] / cam.prnu_map[good] * cam.prnu_map[good].mean() - 1
    # the map is as good as the temporal noise of the 4-frame averages at ~50 % saturation allows
    mu_e = 0.5 * q["saturation_e"].value
    expected = np.sqrt(mu_e + 2 * truth.read_e ** 2 + 2 * (0.29 / truth.gain) ** 2) / mu_e / 2
    assert np.sqrt(np.mean(prnu_err ** 2)) < 1.3 * expected


def test_defect_mask_finds_hot_and_dead(case):
    _, cam, _, fit = case
    mask = fit.arrays["defect_mask"]
    assert np.all(mask[cam.hot_idx] & 1)
    assert np.all(mask[cam.dead_idx] & 2)
    assert (mask != 0).sum() == len(cam.hot_idx[0]) + len(cam.dead_idx[0])


def test_dark_current_from_exposure_series(case):
    truth, _, _, fit = case
    if truth.dark_current == 0:
        assert "dark_current_e_per_s" not in fit.quantities
    else:
        _ok(fit.quantities["dark_current_e_per_s"], truth.dark_current, 0.1)


def test_nonlinear_camera_has_linearity_error():
    truth = TRUTH_A
    cam = EmvaCamera(truth, shape=(64, 64), seed=5)
    pts = _series_a(cam)
    # compress the signal: y -> offset + s (1 - 0.1 s / s_max); linearity error ~ 0.1 * 0.9^2 / 8 ~ 1 %
    smax = 3800.0
    for p in pts:
        s = p.bright.astype(float) - truth.offset
        p.bright = np.round(truth.offset + s * (1 - 0.1 * s / smax)).astype(np.uint16)
    fit = fit_camera(pts, bit_depth=12)
    assert 0.5 < fit.quantities["linearity_error_pct"].value < 3.0


def test_temporal_stats_cancels_fixed_pattern():
    rng = np.random.default_rng(3)
    pattern = 50 * rng.standard_normal((64, 64))
    frames = pattern + 2.0 * rng.standard_normal((2, 64, 64))
    st = temporal_stats(frames)
    assert st.var_adu2 == pytest.approx(4.0, rel=0.05)
    assert abs(st.var_adu2 - 4.0) < 3 * st.var_stderr_adu2 + 1e-9
    d = frames[0] - frames[1]
    assert st.var_adu2 == pytest.approx(((d - d.mean()) ** 2).sum() / (d.size - 1) / 2, rel=1e-3)


@pytest.fixture(scope="module")
def small():
    cam = EmvaCamera(TRUTH_A, shape=(32, 32), seed=9)
    return _series_a(cam)


def _copy(points):
    return [CameraPoint(p.bright.copy(), p.dark.copy(), p.exposure_s, p.photons_per_pixel, p.name) for p in points]


@pytest.mark.parametrize("mutate, message", [
    (lambda pts: pts[3].bright.__setitem__((0, 0, 0), np.nan), "NaN"),
    (lambda pts: setattr(pts[2], "dark", pts[2].dark[:, :16]), "region of interest"),
    (lambda pts: setattr(pts[1], "bright", pts[1].bright[:1]), "two frames"),
    (lambda pts: setattr(pts[1], "bright", np.zeros((0, 32, 32))), "empty"),
    (lambda pts: setattr(pts[1], "exposure_s", float("nan")), "exposure_s"),
])
def test_bad_input_messages(small, mutate, message):
    pts = _copy(small)
    for p in pts:
        p.bright = p.bright.astype(float)
    mutate(pts)
    with pytest.raises(ValueError, match=message) as err:
        fit_camera(pts)
    assert "\n" not in str(err.value)


def test_too_few_points_and_saturated_and_dark_only(small):
    with pytest.raises(ValueError, match="at least 3"):
        fit_camera(_copy(small[:2]))
    sat = _copy(small)
    for p in sat:
        p.bright[:] = 4095
    with pytest.raises(ValueError, match="saturated"):
        fit_camera(sat, bit_depth=12)
    dark = _copy(small)
    for p in dark:
        p.bright = p.dark.copy()
    with pytest.raises(ValueError, match="no light"):
        fit_camera(dark)
    # linear range too short: only the last (saturated) points
    with pytest.raises(ValueError, match="linear range"):
        fit_camera(_copy(small[-4:]), bit_depth=12)
    with pytest.raises(TypeError):
        fit_camera(small[0])
