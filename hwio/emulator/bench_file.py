"""The emulated bench file: a simulated bench's devices as real drivers.

:func:`write_emulated_bench` reads a bench file whose devices are simulated (it holds the
``[truth.*]`` tables) and writes, into the emulator's folder,

* ``bench.toml``: the same bench (sizes, devices, regions, layouts, spots, settle times,
  exposures) with every physical SLM a ``window`` device (a borderless window placed on the
  emulator's X screen, one screen pixel per SLM pixel, ``gray8``) and every physical camera
  a ``pylon_emulator`` device (a pylon emulated camera reading the PNG the optics process
  writes); no truth: this is the file ``optwin calibrate/train/push`` use;
* ``emulator.json``: what the optics process needs (source bench, window placements, image
  files, display latency, camera frame period).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from hwio.config import _read_toml, _resolve, load_bench_config
from hwio.emulator.camera import EMULATED_DEVICES

__all__ = ["write_emulated_bench", "dump_toml", "WINDOW_GAP_PX", "EMULATOR_FILE", "BENCH_FILE"]

#: pixels between two SLM windows on the emulator's screen
WINDOW_GAP_PX = 8
EMULATOR_FILE = "emulator.json"
BENCH_FILE = "bench.toml"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"cannot write {v} to a bench file")
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write a {type(v).__name__} to a bench file")


def dump_toml(doc: dict) -> str:
    """TOML text of ``doc`` (nested dicts of str/int/float/bool/lists; sub-tables after plain keys)."""
    out: list[str] = []

    def table(prefix: str, d: dict) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict)}
        subs = {k: v for k, v in d.items() if isinstance(v, dict)}
        if prefix and (plain or not subs):
            out.append(f"\n[{prefix}]")
        for k, v in plain.items():
            out.append(f"{k} = {_toml_value(v)}")
        for k, v in subs.items():
            table(f"{prefix}.{k}" if prefix else k, v)

    table("", doc)
    return "\n".join(out).lstrip("\n") + "\n"


def _check_emulatable(cfg, label: str, latency_frames, refresh_hz, frame_period_s) -> None:
    """Raise ValueError unless the emulator settings are valid and bench ``cfg`` is fully simulated."""
    if int(latency_frames) < 0 or not refresh_hz > 0 or not frame_period_s > 0:
        raise ValueError(f"latency_frames must be >= 0, refresh_hz and frame_period_s > 0; got {latency_frames}, "
                         f"{refresh_hz}, {frame_period_s}")
    real = [n for n, d in cfg.devices.items() if "region_of" not in d and d["backend"] != "sim"]
    if real:
        raise ValueError(f"{label}: the emulator needs a simulated bench (its [truth] tables are the optics); "
                         f"{', '.join(real)} use real backends")
    if "flat_source" in cfg.devices:
        raise ValueError(f"{label}: the emulator has no flip-in flat lamp; remove [devices.flat_source] "
                         f"(the cameras are then calibrated with the laser)")


def _settle_times(cfg, label: str, settle_time_s: dict | float | None) -> dict:
    """Checked settle-time overrides (s) by physical SLM name; one value applies to every physical SLM."""
    if isinstance(settle_time_s, (int, float)):
        settle_time_s = {n: float(settle_time_s) for n, d in cfg.devices.items()
                         if d["kind"] == "slm" and "region_of" not in d}
    settle_time_s = dict(settle_time_s or {})
    for n, v in settle_time_s.items():
        d = cfg.devices.get(n)
        if d is None or d["kind"] != "slm" or "region_of" in d:
            raise ValueError(f"settle time given for {n!r}, which is not a physical SLM of {label}")
        if not v >= 0:
            raise ValueError(f"settle time of {n} must be >= 0 s, got {v}")
    return settle_time_s


def _window_slm(name: str, d: dict, src: dict, label: str, x_px: int, settle_s: float) -> tuple[dict, dict]:
    """Bench entry and emulator window of SLM ``name`` drawn at screen column ``x_px``."""
    rows, cols = d["shape"]
    dev = {"kind": "slm", "backend": "window", "shape": [rows, cols], "bit_depth": d["bit_depth"],
           "pixel_pitch_m": d["pixel_pitch_m"], "settle_time_s": settle_s}
    for key in ("channels", "encoding", "grating_period_px"):
        if key in d:
            dev[key] = d[key]
    if "wavefront_map" in src:
        raise ValueError(f"{label}: [devices.{name}].wavefront_map is not supported by the emulator; "
                         f"remove it")
    dev["options"] = {"x": x_px, "y": 0, "width": cols, "height": rows, "packing": "gray8", "vsync": True}
    window = {"x": x_px, "y": 0, "width": cols, "height": rows, "bit_depth": d["bit_depth"],
              "settle_time_s": settle_s}
    return dev, window


def _emulated_camera(name: str, d: dict, folder: Path, index: int, frame_period_s: float) -> tuple[dict, dict]:
    """Bench entry and emulator image settings of camera ``name`` (pylon emulated camera ``index``)."""
    rows, cols = d["shape"]
    image = folder / f"{name}.png"
    dev = {"kind": "camera", "backend": "pylon_emulator", "shape": [rows, cols], "bit_depth": d["bit_depth"],
           "exposure_s": d["exposure_s"], "timeout_s": d["timeout_s"], "readout_s": d["readout_s"],
           "max_stale_retries": d["max_stale_retries"],
           "options": {"image_file": str(image), "index": index, "roi": [0, 0, rows, cols],
                       "pixel_format": f"Mono{d['bit_depth']}", "frame_period_s": float(frame_period_s)}}
    camera = {"image_file": str(image), "bit_depth": d["bit_depth"], "shape": [rows, cols]}
    return dev, camera


def _emulated_devices(cfg, doc: dict, label: str, folder: Path, settle_time_s: dict,
                      frame_period_s: float) -> tuple[dict, dict, dict, int]:
    """Emulated bench devices, emulator windows and cameras, and the screen columns used (px)."""
    devices = {}
    windows, cameras = {}, {}
    x = 0
    n_cam = 0
    for name, d in cfg.devices.items():
        src = dict(doc["devices"][name])
        if "region_of" in d:
            devices[name] = src
            continue
        if d["kind"] == "slm":
            settle = float(settle_time_s.get(name, d["settle_time_s"]))
            devices[name], windows[name] = _window_slm(name, d, src, label, x, settle)
            x += d["shape"][1] + WINDOW_GAP_PX
        else:
            devices[name], cameras[name] = _emulated_camera(name, d, folder, n_cam, frame_period_s)
            n_cam += 1
    if n_cam > EMULATED_DEVICES:
        raise ValueError(f"{label}: the emulator drives at most {EMULATED_DEVICES} physical cameras, the bench "
                         f"has {n_cam}; "
                         f"make planes regions of one camera")
    return devices, windows, cameras, x


def write_emulated_bench(source, folder, *, latency_frames: int = 1, refresh_hz: float = 60.0,
                         frame_period_s: float = 0.005, settle_time_s: dict | float | None = None) -> dict:
    """Write ``bench.toml`` and ``emulator.json`` of the emulated twin of bench ``source`` into ``folder``.

    Parameters
    ----------
    source : a simulated bench file (path or built-in name); its devices must all be ``sim``.
    folder : the emulator's folder (created).
    latency_frames : display latency in refresh periods: the optics see a window's content
        this many frames after it was drawn.
    refresh_hz : display refresh rate (Hz).
    frame_period_s : the emulated camera's frame period (s): a grab waits for the next frame.
    settle_time_s : override of the SLMs' settle times (s): one value for every physical SLM
        or a dict name -> value; None keeps the file's.

    Returns
    -------
    dict : the emulator settings written to ``emulator.json`` (``screen_px`` = [width, height]).
    """
    path, label = _resolve(source)
    cfg = load_bench_config(path)
    doc = _read_toml(path, label)
    _check_emulatable(cfg, label, latency_frames, refresh_hz, frame_period_s)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    settle_time_s = _settle_times(cfg, label, settle_time_s)
    devices, windows, cameras, x = _emulated_devices(cfg, doc, label, folder, settle_time_s, frame_period_s)

    bench = dict(doc["bench"])
    bench["name"] = f"{cfg.name}-emulated"
    bench["description"] = f"emulated lab bench ({cfg.name}): window SLMs on Xvfb, pylon emulated cameras, " \
                           f"simulated optics"
    out_doc = {"bench": bench, "devices": devices, "layout": doc.get("layout", {}), "spots": doc.get("spots", {})}
    width = max(64, x - WINDOW_GAP_PX if windows else 64)
    height = max([64] + [w["height"] for w in windows.values()])
    settings = {"source": str(path.resolve()), "folder": str(folder), "bench_file": str(folder / BENCH_FILE),
                "screen_px": [width, height], "windows": windows, "cameras": cameras,
                "latency_frames": int(latency_frames), "refresh_hz": float(refresh_hz),
                "frame_period_s": float(frame_period_s)}
    header = (f"# Emulated bench written by `optwin emulate` from {path.name}: window SLMs on the emulator's X\n"
              f"# display, pylon emulated cameras reading the optics process's images ({folder}).\n"
              f"# Display latency {latency_frames} frame(s) at {refresh_hz:g} Hz, camera frame period "
              f"{frame_period_s:g} s.\n\n")
    text = header + dump_toml(out_doc)
    (folder / BENCH_FILE).write_text(text)
    load_bench_config(folder / BENCH_FILE)          # the file must be a valid bench
    (folder / EMULATOR_FILE).write_text(json.dumps(settings, indent=1))
    return settings
