"""WindowSLM on a real X server (Xvfb): frames must reach the screen pixel-exact.

The screen is read with an independent ``mss`` screenshot of the whole desktop, so the
checks cover placement, scaling, sampling and colour packing of the real display path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.hardware
pytest.importorskip("pyglet")
mss = pytest.importorskip("mss")

from hwio.devices import DeviceError, Timeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def desktop_rgb() -> np.ndarray:
    """Whole virtual screen as (rows, cols, 3) RGB, read independently of the driver."""
    factory = getattr(mss, "MSS", None) or mss.mss
    with factory() as grabber:
        shot = grabber.grab(grabber.monitors[0])
        bgra = np.frombuffer(shot.bgra, np.uint8).reshape(shot.height, shot.width, 4)
    return bgra[:, :, 2::-1]


@pytest.fixture
def make_slm(xvfb_display):
    from hwio.drivers.window_slm import WindowSLM
    made = []

    def factory(**kwargs):
        kwargs.setdefault("timeline", Timeline())
        slm = WindowSLM(**kwargs)
        made.append(slm)
        return slm

    yield factory
    for slm in made:
        slm.close()


def screen_size() -> tuple[int, int]:
    """(width, height) of the X screen as mss reports it."""
    factory = getattr(mss, "MSS", None) or mss.mss
    with factory() as grabber:
        mon = grabber.monitors[0]
    return mon["width"], mon["height"]


def checkerboard(rows, cols, hi=255):
    return ((np.add.outer(np.arange(rows), np.arange(cols)) % 2) * hi).astype(np.uint8)


def test_fullscreen_random_frames_are_pixel_exact(make_slm):
    width, height = screen_size()
    slm = make_slm(name="slm-full", screen=0, settle_time_s=0.01, shape=(height, width))
    assert slm.shape == (height, width)          # panel shape == screen size, no scaling
    rng = np.random.default_rng(7)
    tokens = []
    for _ in range(3):
        levels = rng.integers(0, 256, slm.shape, dtype=np.uint8)
        tokens.append(slm.show(levels))
        screen = desktop_rgb()
        assert screen.shape[:2] == (height, width)
        for channel in range(3):                 # gray packing: R = G = B = level
            np.testing.assert_array_equal(screen[:, :, channel], levels)
        np.testing.assert_array_equal(slm.read_back(), levels)
    assert [t.frame_index for t in tokens] == [0, 1, 2]
    shown = [t.shown_s for t in tokens]
    assert all(b > a for a, b in zip(shown, shown[1:]))
    for t in tokens:
        assert t.settled_s == pytest.approx(t.shown_s + 0.01)
        assert t.device == "slm-full"


def test_placed_window_checkerboard_and_random_at_offset(make_slm):
    x, y, w, h = 37, 21, 201, 99
    slm = make_slm(name="slm-placed", x=x, y=y, width=w, height=h)
    assert slm.shape == (h, w)
    assert slm.geometry == (x, y, w, h)
    board = checkerboard(h, w)
    slm.show(board)
    screen = desktop_rgb()
    np.testing.assert_array_equal(screen[y:y + h, x:x + w, 0], board)     # 1-px period: no filtering
    # the random frame pins the position (a checkerboard shifted by 2 px looks the same)
    levels = np.random.default_rng(3).integers(0, 256, (h, w), dtype=np.uint8)
    slm.show(levels)
    screen = desktop_rgb()
    for channel in range(3):
        np.testing.assert_array_equal(screen[y:y + h, x:x + w, channel], levels)
    # outside the window the (black) root background is untouched
    assert not screen[:y, :, :].any() and not screen[:, :x, :].any()
    assert not screen[y + h:, :, :].any() and not screen[:, x + w:, :].any()
    np.testing.assert_array_equal(slm.read_back("gl"), levels)
    assert slm.self_test(seed=5) == 0


def test_rg16_packing_high_byte_red_low_byte_green(make_slm):
    slm = make_slm(name="slm-12bit", x=0, y=0, width=130, height=70, bit_depth=12)
    assert slm.packing == "rg16" and slm.level_dtype == np.uint16
    levels = np.random.default_rng(11).integers(0, 4096, slm.shape).astype(np.uint16)
    levels[0, :3] = [0, 4095, 256]
    slm.show(levels)
    rgb = desktop_rgb()[:70, :130]
    np.testing.assert_array_equal(rgb[:, :, 0], levels >> 8)
    np.testing.assert_array_equal(rgb[:, :, 1], levels & 0xFF)
    assert not rgb[:, :, 2].any()
    np.testing.assert_array_equal(slm.read_back(), levels)


def test_bad_configuration_and_frames_raise_clearly(make_slm):
    from hwio.drivers.window_slm import WindowSLM
    width, height = screen_size()
    with pytest.raises(ValueError, match="does not fit"):
        WindowSLM(x=width - 10, y=0, width=20, height=20)
    with pytest.raises(ValueError, match="screen index 3"):
        WindowSLM(screen=3)
    with pytest.raises(ValueError, match="shape"):
        WindowSLM(shape=(1080, 1920))
    with pytest.raises(ValueError, match="rg16"):
        WindowSLM(x=0, y=0, width=8, height=8, bit_depth=10, packing="gray")
    slm = make_slm(x=0, y=0, width=16, height=8)
    with pytest.raises(TypeError):
        slm.show(np.zeros((8, 16)))
    with pytest.raises(ValueError):
        slm.show(np.full((8, 16), 256))
    slm.close()
    slm.close()                                   # idempotent
    with pytest.raises(DeviceError, match="closed"):
        slm.show(np.zeros((8, 16), np.uint8))


def test_missing_pyglet_names_the_extra(monkeypatch):
    from hwio.drivers.window_slm import WindowSLM
    monkeypatch.setitem(sys.modules, "pyglet", None)
    with pytest.raises(ImportError, match=r"pip install optwin\[hardware\]"):
        WindowSLM()


def test_headless_egl_window_is_pixel_exact():
    """Headless (EGL) mode in a fresh process: pyglet fixes its mode at import."""
    code = textwrap.dedent("""
        import json, numpy as np
        from hwio.devices import DeviceError
        from hwio.drivers.window_slm import WindowSLM
        try:
            slm = WindowSLM(width=97, height=61, headless=True)
        except DeviceError as exc:
            print(json.dumps({"skip": str(exc)})); raise SystemExit
        rng = np.random.default_rng(1)
        wrong = []
        for _ in range(3):
            levels = rng.integers(0, 256, slm.shape, dtype=np.uint8)
            slm.show(levels)
            wrong.append(int((slm.read_back() != levels).sum()))
        slm.close()
        print(json.dumps({"wrong": wrong, "shape": list(slm.shape)}))
    """)
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "skip" in result:
        pytest.skip(f"no headless EGL here: {result['skip']}")
    assert result == {"wrong": [0, 0, 0], "shape": [61, 97]}
    assert time.monotonic() - t0 < 30
