"""Logical devices as regions of physical ones (hwio.regions, ``region_of`` in bench files).

Regions over the simulator (the reduced bench: one camera for all four planes, one phase
panel for slm1 | slm2 | probe_input | lo), over an in-memory non-sim backend, and over the
window SLM on a real X server (Xvfb); bench-file validation; the LO region's phase steps.
"""
from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hwio.bench import open_bench, open_config
from hwio.config import config_from_document
from hwio.devices import Camera, SLM, SLMWriteError, Timeline
from hwio.regions import RegionCamera, RegionSLM
from hwio.sim.testing import truth_of

REPO = Path(__file__).resolve().parents[2]
REDUCED = REPO / "experiments" / "benches" / "sim_reduced.toml"


def reduced_doc() -> dict:
    with open(REDUCED, "rb") as fh:
        return tomllib.load(fh)


def load(doc: dict):
    return config_from_document(doc, REDUCED, "sim_reduced.toml")


def open_doc(doc: dict):
    return open_config(load(doc))


# ------------------------------------------------------------------------------- in-memory backend
class MemoryPanel(SLM):
    """A non-sim SLM driver that keeps the frames it was sent."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sent = []
        self.fail_next = False

    def _show_hw(self, levels):
        if self.fail_next:
            self.fail_next = False
            raise SLMWriteError(f"{self.name}: link error")
        self.sent.append(levels.copy())


class MemoryCamera(Camera):
    """A non-sim camera whose pixel value encodes (frame number, row, col) and the exposure."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.n = 0
        self.exposure_log = []

    def _set_exposure_hw(self, exposure_s):
        self.exposure_log.append(exposure_s)
        return round(exposure_s, 6)

    def _grab_hw(self, timeout_s):
        self.n += 1
        rr, cc = np.indices(self.shape)
        return (1000 * self.n + 10 * rr + cc).astype(np.uint16), self.timeline.now() + self.n


def test_slm_region_writes_its_rectangle_and_keeps_the_others():
    tl = Timeline()
    panel = MemoryPanel(name="panel", shape=(6, 10), bit_depth=8, settle_time_s=0.25, timeline=tl)
    left = RegionSLM("slm1", panel, (0, 0), (6, 4))
    right = RegionSLM("slm2", panel, (1, 5), (3, 5))
    assert (left.bit_depth, left.settle_time_s, left.timeline) == (8, 0.25, tl)
    t1 = left.show(np.full((6, 4), 7))
    t2 = right.show(np.arange(15).reshape(3, 5))
    full = panel.sent[-1]
    np.testing.assert_array_equal(full[:, :4], 7)                      # slm1 kept its frame
    np.testing.assert_array_equal(full[1:4, 5:], np.arange(15).reshape(3, 5))
    assert full[:, 4].sum() == 0 and full[0, 5:].sum() == 0 and full[4:, 5:].sum() == 0
    # tokens carry the panel's frame index and settle time under the region's name
    assert (t1.device, t1.frame_index, t2.frame_index) == ("slm1", 0, 1)
    assert t2.settled_s == pytest.approx(t2.shown_s + 0.25) and tl.latest_settle_s == t2.settled_s
    np.testing.assert_array_equal(left.crop(panel.last_levels), np.full((6, 4), 7))
    # a failed panel write leaves panel and region as they were
    panel.fail_next = True
    with pytest.raises(SLMWriteError):
        left.show(np.zeros((6, 4), int))
    np.testing.assert_array_equal(left.last_levels, 7)
    np.testing.assert_array_equal(panel.last_levels, full)
    with pytest.raises(ValueError, match="slm2: level frame has shape"):
        right.show(np.zeros((6, 4), int))
    with pytest.raises(ValueError, match="beyond the 6x10 device"):
        RegionSLM("bad", panel, (4, 8), (3, 3))


def test_camera_region_crops_and_sets_its_own_exposure():
    tl = Timeline()
    cam = MemoryCamera(name="cam", shape=(8, 12), bit_depth=12, exposure_s=1e-3, timeline=tl)
    a = RegionCamera("cam_z1", cam, (0, 0), (4, 6), exposure_s=2e-3)
    b = RegionCamera("cam_a1", cam, (4, 6), (4, 6))
    assert b.exposure_s == cam.exposure_s
    fa = a.grab()
    assert cam.exposure_s == 2e-3 and fa.exposure_s == 2e-3
    np.testing.assert_array_equal(fa.image, 1000 + 10 * np.arange(4)[:, None] + np.arange(6))
    b.exposure_s = 5e-4
    fb = b.grab()
    assert fb.exposure_s == 5e-4 and cam.exposure_s == 5e-4
    np.testing.assert_array_equal(fb.image, 2000 + 10 * np.arange(4, 8)[:, None] + np.arange(6, 12))
    # timestamps and frame indices are the physical camera's: every grab is a new frame
    assert fb.timestamp_s > fa.timestamp_s and (fa.frame_index, fb.frame_index) == (0, 1)
    assert fb.meta == {"physical": "cam", "region_px": [4, 6]} and fb.device == "cam_a1"
    n_set = len(cam.exposure_log)
    a.grab()
    a.grab()                                  # switched once, then left alone
    assert len(cam.exposure_log) == n_set + 1 and cam.exposure_s == 2e-3


# ------------------------------------------------------------------------------- the simulator
@pytest.fixture(scope="module")
def reduced():
    with open_bench(REDUCED) as bench:
        yield bench


def test_reduced_bench_opens_with_physical_devices(reduced):
    b = reduced
    assert set(b.physical) == {"panel", "cam"} and "flat_source" not in b.slms
    assert all(isinstance(b.slms[n], RegionSLM) for n in ("slm1", "slm2", "probe_input", "lo"))
    assert all(isinstance(c, RegionCamera) for c in b.cameras.values())
    assert b.region_of("slm2") == "panel" and b.region_of("input") is None
    assert sorted(b.sharing("lo")) == ["probe_input", "slm1", "slm2"]
    info = b.describe()
    dev = {d["name"]: d for d in info["devices"]}
    assert dev["cam_out"]["region_of"] == "cam" and dev["cam_out"]["region_px"] == [80, 0]
    assert dev["panel"]["shape"] == [170, 200]


def test_sim_renders_each_plane_in_its_region(reduced):
    """Each plane's spots land in its own quadrant at the true (region) positions; one sensor."""
    b = reduced
    t = truth_of(b)
    for name in ("slm1", "slm2", "probe_input"):
        b.slms[name].show(np.zeros(b.slms[name].shape, dtype=np.uint8))      # level 0: every element full
    b.slms["lo"].show(np.zeros(b.slms["lo"].shape, dtype=np.uint8))
    dmd = b.slms["input"]
    dmd.show(np.full(dmd.shape, 1, dtype=np.uint8))
    cam = b.physical["cam"]
    for cname, camera in b.cameras.items():
        camera.exposure_s = 1e-5
    frames = {c: b.cameras[c].grab().image.astype(float) for c in b.cameras}
    assert cam.exposure_s == 1e-5
    for camera in b.cameras.values():
        camera.exposure_s = 1e-3
    for cname, img in frames.items():
        pos = t.realised["spot_positions_px"][cname]
        sub = img - np.median(img)
        # the brightest pixel of the plane sits on one of its true spots
        k = np.unravel_index(np.argmax(sub), sub.shape)
        assert np.min(np.hypot(pos[:, 0] - k[0], pos[:, 1] - k[1])) < 1.5, cname
    # the sensor truth is the physical camera's, the maps of a region are crops of its maps
    assert t.cameras["cam_back"] is t.sensors["cam"]
    np.testing.assert_array_equal(t.realised["prnu_map"]["cam_out"], t.realised["prnu_map"]["cam"][80:, :80])


def test_sim_reads_a_region_from_the_panel_frame(reduced):
    """Writing slm2 leaves slm1's realised elements unchanged; writing the panel directly reaches slm1."""
    b = reduced
    eng = b._sim
    b.slms["slm1"].show(np.full(b.slms["slm1"].shape, 40, dtype=np.uint8))
    e1 = eng._elements("slm1").copy()
    b.slms["slm2"].show(np.full(b.slms["slm2"].shape, 90, dtype=np.uint8))
    np.testing.assert_array_equal(eng._elements("slm1"), e1)
    np.testing.assert_array_equal(eng._levels("slm2"), 90)
    full = b.physical["panel"].last_levels.copy()
    full[:164, :24] = 0
    b.physical["panel"].show(full)
    np.testing.assert_array_equal(eng._levels("slm1"), 0)
    assert not np.allclose(eng._elements("slm1"), e1)


def test_lo_region_follows_the_true_panel_law_and_is_measured(reduced):
    """The sim's LO phase is the panel's true law; the camera part's checkerboard sweep recovers it."""
    from calibration.lo_region import lo_phase_table, measure_lo_phase
    from calibration.procedures.context import CalContext
    b = reduced
    t = truth_of(b)
    true = np.asarray(t.lo_phase_table_rad)
    np.testing.assert_allclose(true, t.slms["slm1"].phase_table(8))         # the panel's liquid crystal
    ctx = CalContext(b)
    assert lo_phase_table(b, ctx.fits) is None and ctx.lo_level(math.pi) == 128   # linear guess before
    fit = measure_lo_phase(ctx)
    ctx.add(fit)
    err = fit.arrays["phase_response_rad"] - true
    assert np.sqrt(np.mean(err ** 2)) < 0.015 and np.abs(err).max() < 0.04
    for phase in (0.5 * math.pi, math.pi, 1.5 * math.pi):
        level = ctx.lo_level(phase)
        assert abs(true[level] - phase) < 0.03, (phase, level, true[level])
    # a slm1 fit on the same panel takes over
    from calibration.quantities import Fit
    ctx.add(Fit(name="slm", model="test", arrays={"phase_response_rad": true}))
    assert ctx.lo_level(math.pi) == int(np.argmin(np.abs(true - math.pi)))


def test_standard_benches_keep_their_devices():
    with open_bench("sim") as b:
        assert b.physical == {} and b.region_of("slm1") is None and b.sharing("slm1") == []
        assert "flat_source" in b.slms


# ------------------------------------------------------------------------------- validation
def _bad(mutate, match):
    doc = reduced_doc()
    mutate(doc)
    with pytest.raises(ValueError) as err:
        load(doc)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("sim_reduced.toml: ")
    assert match in msg, msg
    return msg


def test_config_errors_name_file_and_key():
    d = "devices"
    _bad(lambda doc: doc[d]["slm2"].update(region_px=[0, 10]),
         "[devices.slm2].region_px: the region overlaps slm1 on panel")
    _bad(lambda doc: doc[d]["cam_back"].update(region_px=[90, 90]),
         "[devices.cam_back].region_px: the region spans rows 90..169")
    _bad(lambda doc: doc[d]["cam_a1"].update(region_px=[0, 40]), "overlaps cam_z1 on cam")
    _bad(lambda doc: doc[d]["slm1"].update(region_of="pannel"), "[devices.slm1].region_of names no device 'pannel'")
    _bad(lambda doc: doc[d]["slm1"].update(region_of="input"), "names the standard device 'input'")
    _bad(lambda doc: doc[d]["slm1"].update(region_of="cam"), "names 'cam', a camera, but slm1 is a slm")
    _bad(lambda doc: doc[d]["slm1"].update(bit_depth=8),
         "[devices.slm1].bit_depth is set by the physical device [devices.panel]")
    _bad(lambda doc: doc[d]["cam_z1"].update(timeout_s=2.0), "[devices.cam_z1].timeout_s is set by the physical")
    _bad(lambda doc: doc[d]["lo"].update(shape=[8, 14]), "[devices.lo].shape has 14 columns")
    _bad(lambda doc: doc[d]["slm1"].pop("region_px"), "[devices.slm1].region_px is missing")
    _bad(lambda doc: doc[d].update(flat_source={"region_of": "panel", "region_px": [100, 0], "shape": [1, 1]}),
         "[devices.flat_source].region_of is not allowed")
    _bad(lambda doc: doc[d].update(extra={"kind": "slm", "backend": "sim", "shape": [4, 4]}),
         "[devices.extra] is a simulated slm that holds no region")
    _bad(lambda doc: doc[d].pop("lo"), "lo as a region of a phase panel")
    _bad(lambda doc: doc["truth"]["camera"].update(cam_z1={"gain_adu_per_e": 0.3}),
         "[truth.camera].cam_z1 describes a region of 'cam'")
    _bad(lambda doc: doc["truth"]["slm"]["slm2"].update(gamma=1.05),
         "[truth.slm.slm2] gives slm2 another phase law than slm1")


def test_optional_flat_source_and_lo_stepper_beside_regions():
    """A bench may drop the flat lamp and keep a phase-stepper LO while its cameras are regions."""
    doc = reduced_doc()
    doc["devices"]["lo"] = {"backend": "sim", "shape": [1, 4], "bit_depth": 8, "settle_time_s": 0.005}
    cfg = load(doc)
    assert "flat_source" not in cfg.devices and "region_of" not in cfg.devices["lo"]
    with open_config(cfg) as b:
        assert truth_of(b).lo_phase_table_rad is None and b.region_of("lo") is None


# ------------------------------------------------------------------------------- a real backend: window SLM
def test_window_panel_regions_on_a_mixed_bench(xvfb_display):
    """slm1 and slm2 as regions of a real window panel (Xvfb), the rest simulated: the screen shows
    both regions where they belong and the simulator reads them from the real panel's frame."""
    pytest.importorskip("pyglet")
    mss = pytest.importorskip("mss")
    doc = reduced_doc()
    doc["devices"]["panel"] = {"kind": "slm", "backend": "window", "shape": [170, 200], "bit_depth": 8,
                               "options": {"x": 0, "y": 0, "width": 200, "height": 170}}
    with open_doc(doc) as b:
        assert type(b.physical["panel"]).__name__ == "WindowSLM"
        rng = np.random.default_rng(5)
        w1 = rng.integers(0, 256, b.slms["slm1"].shape).astype(np.uint8)
        w2 = rng.integers(0, 256, b.slms["slm2"].shape).astype(np.uint8)
        b.slms["slm1"].show(w1)
        b.slms["slm2"].show(w2)
        factory = getattr(mss, "MSS", None) or mss.mss
        with factory() as grabber:
            shot = grabber.grab(grabber.monitors[0])
            screen = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)[:, :, 2]
        np.testing.assert_array_equal(screen[:164, :24], w1)
        np.testing.assert_array_equal(screen[:24, 32:196], w2)
        np.testing.assert_array_equal(b._sim._levels("slm1"), w1)
        np.testing.assert_array_equal(b._sim._levels("slm2"), w2)
        frame = b.cameras["cam_z1"].grab()                   # the sim renders from the real panel's frame
        assert frame.image.shape == (80, 80)
