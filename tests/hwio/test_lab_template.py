"""The lab template (hwio/benches/lab_template.toml), the bench file a lab copies and edits.

It loads and is described without hardware, its ``[devices.<name>.options]`` are keyword
arguments of the drivers (checked the way opening the bench checks them, without opening a
device), and its comments list every option of every real driver.
"""
from __future__ import annotations

import importlib
import inspect
import json
import re

import pytest

from hwio import bench as hb
from hwio.bench import BENCH_DIR, CAMERA_NAMES, REAL_BACKENDS, load_bench_config
from hwio.devices import Timeline
from optwin.cli import main

TEMPLATE = BENCH_DIR / "lab_template.toml"
#: driver parameters that are not options: set by the bench, or by keys of [devices.<name>] itself
NOT_OPTIONS = {"self", "name", "timeline", "shape", "bit_depth", "pixel_pitch_m", "settle_time_s",
               "exposure_s", "timeout_s", "max_stale_retries"}


def driver_class(backend):
    module, cls = REAL_BACKENDS[backend][1].split(":")
    return getattr(importlib.import_module(module), cls)


def test_template_is_a_real_bench_found_by_name():
    cfg = load_bench_config("lab_template")
    assert cfg.path == TEMPLATE and cfg.name == "lab" and not cfg.simulated
    assert tuple(cfg.sizes) == (2, 16, 2)
    for name in ("input", "slm1", "slm2", "probe_input"):
        assert cfg.devices[name]["backend"] == "window", name
    for name in CAMERA_NAMES:
        assert cfg.devices[name]["backend"] == "pylon", name
    assert set(cfg.layouts) == {"input", "slm1", "slm2", "probe_input"}
    assert set(cfg.spots) == set(CAMERA_NAMES)


def test_every_option_is_a_parameter_of_its_driver():
    cfg = load_bench_config(TEMPLATE)
    timeline = Timeline()
    n_options = 0
    for name, dev in cfg.devices.items():
        options = dev.get("options", {})
        assert not set(options) & NOT_OPTIONS, f"{name}: set these as keys of [devices.{name}]"
        cls, kwargs = hb._real_plan(cfg, name, dev, timeline)       # raises on an unknown option
        assert cls is driver_class(dev["backend"])
        for key, value in options.items():
            assert kwargs[key] == (tuple(value) if isinstance(value, list) else value)
        n_options += len(options)
        # what the options ask for is the shape the file promises (else opening fails)
        if "roi" in options:
            assert options["roi"][2:] == dev["shape"], name
        if "width" in options:
            assert [options["height"], options["width"]] == dev["shape"], name
    assert n_options >= 10


@pytest.mark.parametrize("backend", sorted(REAL_BACKENDS))
def test_template_documents_every_driver_option(backend):
    text = TEMPLATE.read_text()
    params = set(inspect.signature(driver_class(backend).__init__).parameters) - NOT_OPTIONS
    assert params
    missing = sorted(p for p in params if not re.search(rf"^#?\s*{p}\s*=", text, re.M))
    assert not missing, f"lab_template.toml does not document {backend} options {missing}"


def test_bench_info_describes_it_without_hardware(capsys):
    code = main(["bench", "info", "--bench", str(TEMPLATE), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    info = json.loads(out)
    assert info["bench"] == "lab" and info["simulated"] is False
    assert {d["name"]: d["backend"] for d in info["devices"]}["cam_out"] == "pylon"
