"""The bad-input corpus: bad files, arguments and benches given to every ``optwin`` command.

Each case runs ``optwin.cli.main`` in this process and asserts what a user must get: the
documented exit code, exactly one error line on stderr (``optwin <command>: error: ...``,
naming what is wrong; argparse's own errors come after its usage line), no traceback, and
no existing file changed (every file in the corpus folder is hashed before and after; no
temporary file is left behind).

Valid inputs come from the real producers: the session calibration of the simulated bench
(``sim_calibration_file``) and ``optwin train --system twin --task moons --epochs 2 --out``;
bad ones are made from them (truncated, edited, of another kind) or written by hand.

    python -m pytest -n 0 tests/optwin/test_bad_input_corpus.py
"""
from __future__ import annotations

import contextlib
import io
import shutil
import traceback
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from hwio.bench import BENCH_DIR
from optwin.cli import main

REPO = Path(__file__).resolve().parents[2]
SIM_TOML = (BENCH_DIR / "sim.toml").read_text()
GRID_TOML = (REPO / "datasets" / "sweeps" / "example.toml").read_text()


# ------------------------------------------------------------------------------------ valid inputs
def _slm_csv(power=None, levels=None, header="level, first_order_power (uW)") -> str:
    levels = np.arange(0, 256, 5) if levels is None else np.asarray(levels)
    if power is None:
        power = 3.0 * np.sin(6.4 * (levels / 255) ** 1.1 / 2) ** 2 + 0.2
    return header + "\n" + "".join(f"{lv},{p:.6g}\n" for lv, p in zip(levels, power))


P_IN = np.geomspace(0.1, 150, 24)
T_CELL = np.exp(-3.0 / (1 + P_IN / 2.5))


def _pump_csv(p_out=None, p_in=P_IN, extra="") -> str:
    p_out = 0.8 * p_in * T_CELL if p_out is None else p_out
    return extra + "input (mW),output (mW)\n" + "".join(f"{a:.6g},{b:.6g}\n" for a, b in zip(p_in, p_out))


def _probe_csv(t=None, extra="") -> str:
    t = 0.4 * T_CELL if t is None else t
    return extra + "pump\tprobe_transmission\n" + "".join(f"{a:.6g}\t{b:.6g}\n" for a, b in zip(P_IN, t))


def _camera_h5(path: Path, edit=None, dtype=np.uint16) -> None:
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        for i, t in enumerate((1e-4, 4e-4, 8e-4, 1.2e-3)):
            g = f.create_group(f"points/p{i}")
            g.attrs["exposure_s"] = t
            for kind, mean in (("bright", 100 + t * 2e6), ("dark", 100.0)):
                g.create_dataset(kind, data=rng.poisson(mean, (3, 8, 8)).astype(dtype))
        if edit:
            edit(f)


def _unsealed_cal(src: Path, dst: Path, edit) -> None:
    """A copy of calibration file ``src`` as an older optwin wrote it (no seal, no digests),
    edited by ``edit(file)``: what the checks after the seal must catch by themselves."""
    with h5py.File(src, "r") as s, h5py.File(dst, "w") as d:
        for key, value in s.attrs.items():
            d.attrs[key] = value
        for key in s:
            s.copy(s[key], d, name=key)
        for name in d["fits"]:
            d["fits"][name].attrs.pop("sha256", None)
        edit(d)


def _sealed_edit(src: Path, dst: Path, edit) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        edit(f)


def _flip(src: Path, dst: Path, where: float) -> None:
    data = bytearray(src.read_bytes())
    pos = int(len(data) * where)
    data[pos] ^= 0x5A
    dst.write_bytes(bytes(data))


def _bench(replace: dict | None = None, append: str = "", device: tuple | None = None) -> str:
    """sim.toml with text replaced, or one device table replaced by ``device = (name, body)``."""
    text = SIM_TOML
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    if device:
        name, body = device
        i = text.index(f"[devices.{name}]")
        j = text.index("\n[", i + 5)
        text = text[:i] + f"[devices.{name}]\n" + body + text[j:]
    return text + append


def _genicam(cti_line: str) -> tuple:
    return ("cam_back", 'backend = "genicam"\nshape = [80, 80]\nbit_depth = 12\nexposure_s = 1e-3\n'
                        f"[devices.cam_back.options]\n{cti_line}\n")


def _grid(replace: dict | None = None, text: str | None = None) -> str:
    text = GRID_TOML if text is None else text
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def _set(path, key, value):
    def edit(f):
        f[path].attrs[key] = value
    return edit


# ------------------------------------------------------------------------------------ bad files
def _files(d: Path, cal: Path, run: Path, run16: Path) -> None:
    """Every file the cases name, made in the folder ``d``."""
    w = lambda name, text: (d / name).write_text(text)          # noqa: E731
    b = lambda name, data: (d / name).write_bytes(data)          # noqa: E731
    (d / "folder.h5").mkdir()
    (d / "folder.csv").mkdir()
    (d / "folder.cti").mkdir()
    b("empty.h5", b"")
    w("text.h5", "this is a note, not HDF5\n")
    b("random.h5", np.random.default_rng(0).bytes(4096))
    b("sig_junk.h5", b"\x89HDF\r\n\x1a\n" + np.random.default_rng(1).bytes(600))
    b("cal_half.h5", cal.read_bytes()[: cal.stat().st_size // 2])
    b("cal_head.h5", cal.read_bytes()[:1500])
    b("run_half.h5", run.read_bytes()[: run.stat().st_size // 2])
    with h5py.File(d / "other_kind.h5", "w") as f:
        f.attrs["kind"] = "somebody-else"
        f["x"] = np.arange(3)
    with h5py.File(d / "no_kind.h5", "w") as f:
        f["x"] = np.arange(3)
    # calibration files: sealed files edited after writing, and unsealed (older) ones
    _sealed_edit(cal, d / "cal_schema_str.h5", _set("/", "schema_version", "1"))
    _sealed_edit(cal, d / "cal_schema_99.h5", _set("/", "schema_version", 99))
    _sealed_edit(cal, d / "cal_schema_neg.h5", _set("/", "schema_version", -1))
    _sealed_edit(cal, d / "cal_schema_float.h5", _set("/", "schema_version", 1.5))
    _sealed_edit(cal, d / "cal_kind_int.h5", _set("/", "kind", 7))
    _sealed_edit(cal, d / "cal_rot_value.h5", lambda f: f["fits/camera/quantities/gain_adu_per_e"].attrs.modify(
        "value", f["fits/camera/quantities/gain_adu_per_e"].attrs["value"] * (1 + 1e-9)))
    _sealed_edit(cal, d / "cal_rot_units.h5", _set("fits/absorber/quantities/alpha0", "units", "mW"))
    _sealed_edit(cal, d / "cal_rot_model.h5", _set("fits/absorber", "model", "thin"))
    _sealed_edit(cal, d / "cal_rot_name.h5", _set("/", "bench_name", "another"))

    def rot_array(f):
        a = f["fits/slm/arrays/phase_response_rad"]
        v = a[()]
        v[10] += 1e-6
        a[...] = v
    _sealed_edit(cal, d / "cal_rot_array.h5", rot_array)
    for i, where in enumerate((0.1, 0.3, 0.5, 0.7, 0.9, 0.999)):
        _flip(cal, d / f"cal_flip{i}.h5", where)
    _flip(cal, d / "cal_flip_seal.h5", 20 / cal.stat().st_size)

    def nan_value(f):
        f["fits/camera/quantities/gain_adu_per_e"].attrs["value"] = np.nan
    _unsealed_cal(cal, d / "cal_nan.h5", nan_value)
    _unsealed_cal(cal, d / "cal_inf.h5", _set("fits/absorber/quantities/alpha0", "value", np.inf))
    _unsealed_cal(cal, d / "cal_ninf.h5", _set("fits/absorber/quantities/i_sat", "value", -np.inf))

    def external_link(f):
        del f["fits/camera/arrays"]
        f["fits/camera/arrays"] = h5py.ExternalLink(str(cal), "/fits/camera/arrays")
    _unsealed_cal(cal, d / "cal_extlink.h5", external_link)
    (d / "ext_raw.bin").write_bytes(np.arange(16, dtype=np.float64).tobytes())

    def external_storage(f):
        del f["fits/camera/arrays"]
        g = f.create_group("fits/camera/arrays")
        g.create_dataset("m", shape=(16,), dtype=np.float64, external=[(str(d / "ext_raw.bin"), 0, 128)])
    _unsealed_cal(cal, d / "cal_extstore.h5", external_storage)

    def virtual(f):
        layout = h5py.VirtualLayout(shape=(4,), dtype=np.float64)
        layout[:] = h5py.VirtualSource(str(cal), "fits/slm/arrays/phase_response_rad", shape=(4,))
        del f["fits/slm/arrays/phase_response_rad"]
        f["fits/slm/arrays"].create_virtual_dataset("phase_response_rad", layout)
    _unsealed_cal(cal, d / "cal_virtual.h5", virtual)
    _unsealed_cal(cal, d / "cal_badjson.h5", _set("/", "bench_config", "{not json"))

    def fits_dataset(f):
        del f["fits"]
        f["fits"] = np.arange(3)
    _unsealed_cal(cal, d / "cal_fits_dataset.h5", fits_dataset)

    def no_quantities(f):
        del f["fits/camera/quantities"]
    _unsealed_cal(cal, d / "cal_no_quantities.h5", no_quantities)

    def value_text(f):
        f["fits/camera/quantities/gain_adu_per_e"].attrs["value"] = "0.5 ADU/e"
    _unsealed_cal(cal, d / "cal_value_text.h5", value_text)

    def drop_slm(f):
        del f["fits/slm"]
    _unsealed_cal(cal, d / "cal_no_slm.h5", drop_slm)
    # run files
    shutil.copyfile(run, d / "run_copy.h5")
    for name, edit in {
        "run_kind": _set("/", "kind", "optwin-calibration"),
        "run_schema_99": _set("/", "schema_version", 99),
        "run_schema_str": _set("/", "schema_version", "one"),
        "run_nan": lambda f: f["weights/layer0"].__setitem__((0, 0), np.nan),
        "run_inf": lambda f: f["weights/layer1"].__setitem__((0, 0), np.inf),
        "run_no_weights": lambda f: f.__delitem__("weights"),
        "run_1d": lambda f: (f["weights"].__delitem__("layer0"), f["weights"].create_dataset("layer0", data=np.ones(5))),
        "run_chain": lambda f: (f["weights"].__delitem__("layer1"),
                                f["weights"].create_dataset("layer1", data=np.ones((2, 7)))),
        "run_text_w": lambda f: (f["weights"].__delitem__("layer0"), f["weights"].create_dataset("layer0", data=b"ab")),
        "run_ext": lambda f: (f["weights"].__delitem__("layer1"),
                              f["weights"].__setitem__("layer1", h5py.ExternalLink(str(run), "/weights/layer1"))),
        "run_settings_ds": lambda f: (f.__delitem__("settings"), f.__setitem__("settings", np.arange(2))),
        "run_xor": _set("settings", "task", "xor"),
    }.items():
        _sealed_edit(run, d / f"{name}.h5", edit)
    for i, where in enumerate((0.05, 0.4, 0.8)):
        _flip(run16, d / f"run_flip{i}.h5", where)
    # lab files
    w("slm_ok.csv", _slm_csv())
    b("slm_binary.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    b("slm_latin1.csv", "level,first_order_power\n1,2 \xb5W\n".encode("latin-1"))
    w("slm_header_only.csv", "level,first_order_power\n")
    w("slm_comments.csv", "# nothing here\n\n# at all\n")
    w("slm_columns.csv", "level,power\n0,1\n1,2\n")
    w("slm_word.csv", "level,first_order_power\n0,1\n1,lots\n")
    w("slm_nan.csv", "level,first_order_power\n0,1\n1,nan\n")
    w("slm_inf.csv", "level,first_order_power\n0,1\n1,inf\n")
    w("slm_ragged.csv", "level,first_order_power\n0,1\n1\n")
    w("slm_three.csv", "0,1,2\n1,2,3\n")
    w("slm_neg_level.csv", _slm_csv(levels=np.arange(-5, 250, 5), power=np.linspace(0.2, 3, 51)))
    w("slm_frac_level.csv", "level,first_order_power\n0.5,1\n1.5,2\n")
    w("slm_all_negative.csv", _slm_csv(power=-np.linspace(0.2, 3, 52)))
    w("slm_negative.csv", _slm_csv(power=np.sin(np.linspace(0, 6, 52)) * 3))
    w("slm_zero.csv", _slm_csv(power=np.zeros(52)))
    w("slm_huge_level.csv", "level,first_order_power\n0,1\n1e300,2\n")
    w("pump_ok.csv", _pump_csv())
    w("probe_ok.csv", _probe_csv())
    w("pump_gain.csv", _pump_csv(p_out=1.5 * P_IN * T_CELL))
    w("pump_gain_bad.csv", _pump_csv(p_out=1.5 * P_IN * T_CELL, extra="# gain = -2\n"))
    w("pump_gain_word.csv", _pump_csv(extra="# gain = lots\n"))
    w("pump_gain_twice.csv", _pump_csv(extra="# gain = 2\n# gain = 3\n"))
    w("pump_gain_low.csv", _pump_csv(p_out=3.0 * P_IN * T_CELL, extra="# gain = 2\n"))
    w("pump_neg_input.csv", _pump_csv(p_in=P_IN - 1.0))
    w("pump_neg_output.csv", _pump_csv(p_out=0.8 * P_IN * T_CELL - 10.0))
    w("pump_all_zero.csv", _pump_csv(p_out=np.zeros_like(P_IN)))
    w("pump_swapped.csv", "input,output\n" + "".join(f"{b:.6g},{a:.6g}\n" for a, b in zip(P_IN, 0.8 * P_IN * T_CELL)))
    w("probe_above_one.csv", _probe_csv(t=1.6 * T_CELL + 0.2))
    w("probe_percent.csv", _probe_csv(t=40 * T_CELL))
    w("probe_negative.csv", _probe_csv(t=0.4 * T_CELL - 0.3))
    w("probe_neg_pump.csv", "pump,probe_transmission\n-1,0.2\n1,0.3\n")
    _camera_h5(d / "cam_ok.h5")
    _camera_h5(d / "cam_no_points.h5", lambda f: f.__delitem__("points"))
    _camera_h5(d / "cam_2d.h5", lambda f: (f["points/p0"].__delitem__("bright"),
                                           f["points/p0"].create_dataset("bright", data=np.ones((8, 8)))))
    _camera_h5(d / "cam_no_dark.h5", lambda f: f["points/p1"].__delitem__("dark"))
    _camera_h5(d / "cam_no_exposure.h5", lambda f: f["points/p2"].attrs.__delitem__("exposure_s"))
    _camera_h5(d / "cam_neg_exposure.h5", _set("points/p2", "exposure_s", -1e-3))
    _camera_h5(d / "cam_text_exposure.h5", _set("points/p2", "exposure_s", "1 ms"))
    _camera_h5(d / "cam_neg_photons.h5", _set("points/p2", "photons_per_pixel", -5.0))
    _camera_h5(d / "cam_negative.h5", lambda f: f["points/p1/bright"].__setitem__((0, 0, 0), -40.0),
               dtype=np.float64)
    _camera_h5(d / "cam_nan.h5", lambda f: f["points/p1/dark"].__setitem__((0, 0, 0), np.nan), dtype=np.float64)

    def swapped(f):
        g = f["points/p3"]
        g.move("bright", "tmp")
        g.move("dark", "bright")
        g.move("tmp", "dark")
    _camera_h5(d / "cam_swapped.h5", swapped)

    def sizes(f):
        g = f["points/p0"]
        del g["bright"], g["dark"]
        g["bright"] = np.ones((3, 4, 4), np.uint16)
        g["dark"] = np.ones((3, 4, 4), np.uint16)
    _camera_h5(d / "cam_sizes.h5", sizes)
    _camera_h5(d / "cam_strings.h5", lambda f: (f["points/p0"].__delitem__("bright"),
                                                f["points/p0"].create_dataset("bright", data=np.array([[[b"x"]]] * 3))))
    _camera_h5(d / "cam_extlink.h5", lambda f: (f["points/p0"].__delitem__("dark"),
                                                f["points/p0"].__setitem__("dark", h5py.ExternalLink(
                                                    str(d / "cam_ok.h5"), "/points/p0/dark"))))
    b("cam_half.h5", (d / "cam_ok.h5").read_bytes()[:3000])
    # benches
    w("bench_ok.toml", SIM_TOML)
    b("bench_latin1.toml", SIM_TOML.replace("simulated two-layer", "simul\xe9 two-layer").encode("latin-1"))
    b("bench_binary.toml", b"\x00\x01\x02\xff" * 20)
    w("bench_syntax.toml", SIM_TOML.replace("n_in = 2", "n_in == 2"))
    w("bench_no_bench.toml", SIM_TOML.replace("[bench]", "[bnech]"))
    w("bench_n_in_zero.toml", _bench({"n_in = 2": "n_in = 0"}))
    w("bench_n_in_text.toml", _bench({"n_in = 2": 'n_in = "two"'}))
    w("bench_backend.toml", _bench({'backend = "sim"': 'backend = "magic"'}))
    w("bench_bits_text.toml", _bench({"bit_depth = 8": 'bit_depth = "eight"'}))
    w("bench_bits_99.toml", _bench({"bit_depth = 8": "bit_depth = 99"}))
    w("bench_shape_neg.toml", _bench({"shape = [164, 24]": "shape = [-164, 24]"}))
    w("bench_settle_nan.toml", _bench({"settle_time_s = 0.02": "settle_time_s = nan"}))
    w("bench_exposure_neg.toml", _bench({"exposure_s = 1e-3": "exposure_s = -1e-3"}))
    w("bench_unknown_device.toml", _bench(append='\n[devices.mystery]\nbackend = "sim"\nshape = [4, 4]\n'))
    w("bench_unknown_key.toml", _bench({"settle_time_s = 0.02": "settle_time_s = 0.02\nsettle_tiem_s = 1"}))
    w("bench_truth_real.toml", _bench(device=("cam_z1", 'backend = "opencv"\nshape = [80, 80]\nbit_depth = 12\n')))
    w("bench_cti_missing.toml", _bench(device=_genicam(f'cti = "{d / "absent.cti"}"')))
    (d / "producer.so").write_bytes(b"\x7fELF not really")
    w("bench_cti_suffix.toml", _bench(device=_genicam(f'cti = "{d / "producer.so"}"')))
    w("bench_cti_folder.toml", _bench(device=_genicam(f'cti = "{d / "folder.cti"}"')))
    w("bench_cti_list.toml", _bench(device=_genicam(f'cti = ["{d / "absent.cti"}"]')))
    w("bench_cti_number.toml", _bench(device=_genicam("cti = 5")))
    w("bench_cti_empty.toml", _bench(device=_genicam("cti = []")))
    w("bench_option_unknown.toml", _bench(device=_genicam('colour = "blue"')))
    # sweep grids
    w("grid_ok.toml", GRID_TOML)
    w("grid_syntax.toml", _grid({"\n[axes]\n": "\n[axes\n"}))
    b("grid_latin1.toml", _grid().replace("moons: alpha0", "moons: \xe9").encode("latin-1"))
    w("grid_unknown.toml", _grid({"lr = 0.01": "learning_rate = 0.01"}))
    w("grid_no_axes.toml", _grid({"\n[axes]\n": "\n[base2]\n"}))
    w("grid_empty_axis.toml", _grid({"seed = [0, 1, 2]": "seed = []"}))
    w("grid_axis_nan.toml", _grid({"alpha0 = [0.5, 2.0, 5.0, 10.0, 20.0]": "alpha0 = nan"}))
    w("grid_both.toml", _grid({"hidden = [32]": "hidden = [32]\nlayers = [2, 8, 2]"}))
    w("grid_base_and_axis.toml", _grid({"lr = 0.01": "lr = 0.01\nseed = 4"}))
    w("grid_no_task.toml", _grid({'task = "moons"': ""}))
    w("grid_dupe.toml", _grid({"seed = [0, 1, 2]": "seed = [0, 1, 1]"}))
    w("grid_log0.toml", _grid({"alpha0 = [0.5, 2.0, 5.0, 10.0, 20.0]": "alpha0 = {start = 0, stop = 5, num = 3, log = true}"}))
    w("grid_range_bad.toml", _grid({"alpha0 = [0.5, 2.0, 5.0, 10.0, 20.0]": "alpha0 = {start = 0, stop = 5}"}))
    w("grid_table.toml", GRID_TOML + "\n[extra]\nx = 1\n")
    w("grid_description.toml", _grid({'description = "moons: alpha0 x readout noise, probe rule, 3 seeds"':
                                      "description = 5"}))
    w("notes.txt", "keep me\n")
    w("results.csv", "index,key,status\n")


# ------------------------------------------------------------------------------------ cases
@dataclass
class Case:
    id: str
    argv: tuple
    fragment: str = ""          # part of the error message (case-insensitive)
    code: int = 2
    xfail: str = ""             # reason, where the behaviour belongs to work not done yet


def C(id, *argv, fragment="", code=2, xfail=""):
    return Case(id, argv, fragment, code, xfail)


BAD_CAL = {       # file -> what the message must say
    "missing.h5": "no such", "folder.h5": "directory", "empty.h5": "", "text.h5": "", "random.h5": "",
    "sig_junk.h5": "", "cal_half.h5": "", "cal_head.h5": "", "run_copy.h5": "not an optwin calibration",
    "other_kind.h5": "not an optwin calibration", "no_kind.h5": "kind=None",
    "cal_schema_str.h5": "schema_version '1'", "cal_schema_99.h5": "newer than this optwin",
    "cal_schema_neg.h5": "whole number", "cal_schema_float.h5": "whole number", "cal_kind_int.h5": "kind=7",
    "cal_rot_value.h5": "fit 'camera' does not match", "cal_rot_units.h5": "fit 'absorber' does not match",
    "cal_rot_model.h5": "fit 'absorber' does not match", "cal_rot_name.h5": "changed after optwin wrote it",
    "cal_rot_array.h5": "fit 'slm'", "cal_flip0.h5": "", "cal_flip1.h5": "", "cal_flip2.h5": "",
    "cal_flip3.h5": "", "cal_flip4.h5": "", "cal_flip5.h5": "", "cal_flip_seal.h5": "",
    "cal_nan.h5": "fit 'camera' holds a fitted value that is not a finite", "cal_inf.h5": "alpha0=inf",
    "cal_ninf.h5": "i_sat=-inf", "cal_extlink.h5": "external link", "cal_extstore.h5": "external file",
    "cal_virtual.h5": "virtual dataset", "cal_badjson.h5": "damaged", "cal_fits_dataset.h5": "damaged",
    "cal_no_quantities.h5": "damaged", "cal_value_text.h5": "damaged",
}
CAL_CMDS = {
    "compare": ("compare", "--bench", "sim", "--cal", "{f}", "--report", "{new}"),
    "push": ("push", "--bench", "sim", "--weights", "{run16}", "--cal", "{f}"),
    "train": ("train", "--system", "bench", "--bench", "sim", "--cal", "{f}", "--epochs", "1", "--no-progress"),
}
CASES = []
for name, fragment in BAD_CAL.items():
    for cmd, argv in CAL_CMDS.items():
        if cmd != "compare" and not (fragment == "" or name in ("missing.h5", "cal_rot_value.h5", "cal_nan.h5",
                                                                "cal_extlink.h5", "cal_schema_str.h5",
                                                                "run_copy.h5")):
            continue
        CASES.append(C(f"cal-{cmd}-{name}", *[a.replace("{f}", "{d}/" + name) for a in argv], fragment=fragment))
CASES += [
    C("cal-missing-fit", "compare", "--bench", "sim", "--cal", "{d}/cal_no_slm.h5", "--report", "{new}",
      fragment="slm"),
    C("cal-other-bench", "compare", "--bench", "sim_alt", "--cal", "{cal}", "--report", "{new}",
      fragment="--allow-other-bench"),
    C("cal-other-bench-push", "push", "--bench", "sim_alt", "--weights", "{run16}", "--cal", "{cal}",
      fragment="sim_alt"),
]

BAD_RUN = {
    "missing.h5": "no such run file", "folder.h5": "", "empty.h5": "", "text.h5": "", "random.h5": "",
    "run_half.h5": "", "cal_copy.h5": "not an optwin run file", "other_kind.h5": "not an optwin run file",
    "run_kind.h5": "kind='optwin-calibration'", "run_schema_99.h5": "newer than this optwin",
    "run_schema_str.h5": "whole number", "run_nan.h5": "not a finite real matrix",
    "run_inf.h5": "not a finite real matrix", "run_no_weights.h5": "", "run_1d.h5": "layer0",
    "run_chain.h5": "takes 7 inputs", "run_text_w.h5": "", "run_ext.h5": "external link",
    "run_settings_ds.h5": "", "run_flip0.h5": "", "run_flip1.h5": "", "run_flip2.h5": "",
}
for name, fragment in BAD_RUN.items():
    CASES.append(C(f"run-push-{name}", "push", "--bench", "sim", "--weights", "{d}/" + name, fragment=fragment))
    CASES.append(C(f"run-init-{name}", "train", "--task", "moons", "--epochs", "1", "--init-from", "{d}/" + name,
                   "--no-progress", fragment=fragment))
CASES += [
    C("run-init-other-task", "train", "--task", "xor", "--epochs", "1", "--init-from", "{run}", "--no-progress",
      fragment="moons"),
    C("run-init-other-layers", "train", "--task", "moons", "--layers", "2,8,2", "--epochs", "1", "--init-from",
      "{run}", "--no-progress", fragment="shape"),
    C("run-push-wrong-size", "push", "--bench", "sim", "--weights", "{run}", fragment="layers 2,16,2"),
    C("run-compare-bad", "compare", "--bench", "sim", "--cal", "{cal}", "--run", "{d}/run_nan.h5", "--report",
      "{new}", fragment="not a finite"),
    C("run-resume-nan", "train", "--task", "moons", "--epochs", "3", "--out", "{d}/run_nan.h5", "--resume",
      "--no-progress", fragment="not a finite"),
    C("run-resume-kind", "train", "--task", "moons", "--epochs", "3", "--out", "{d}/run_kind.h5", "--resume",
      "--no-progress", fragment="calibration"),
    C("run-resume-calibration", "train", "--task", "moons", "--epochs", "3", "--out", "{cal}", "--resume",
      "--no-progress", fragment="calibration"),
]

SLM = {
    "missing.csv": "no such file", "folder.csv": "is a directory", "slm_binary.csv": "binary",
    "slm_latin1.csv": "UTF-8", "slm_header_only.csv": "header only", "slm_comments.csv": "no data rows",
    "slm_columns.csv": "missing first_order_power", "slm_word.csv": "not a number", "slm_nan.csv": "finite",
    "slm_inf.csv": "finite", "slm_ragged.csv": "1 columns", "slm_three.csv": "exactly the columns",
    "slm_neg_level.csv": "gray levels >= 0", "slm_frac_level.csv": "integer gray levels",
    "slm_all_negative.csv": "no power above zero", "slm_negative.csv": "cannot be negative",
    "slm_zero.csv": "no power above zero", "slm_huge_level.csv": "not a gray level", "pump_ok.csv": "missing level",
}
CASES += [C(f"slm-{n}", "calibrate", "slm", "--curve", "{d}/" + n, fragment=f) for n, f in SLM.items()]
CASES += [
    C("slm-bits-0", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--bits", "0", fragment="--bits"),
    C("slm-bits-99", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--bits", "99", fragment="--bits"),
    C("slm-bits-small", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--bits", "4", fragment="does not fit 4 bit"),
    C("slm-bits-word", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--bits", "eight", fragment="invalid int"),
    C("slm-panel", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--slm", "slm9", fragment="not a phase panel"),
    C("slm-no-curve", "calibrate", "slm", fragment="--curve"),
    C("slm-out-folder-missing", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{d}/nowhere/cal.h5",
      fragment="does not exist"),
    C("slm-out-run", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{run}", fragment="optwin-run"),
    C("slm-out-csv", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{d}/pump_ok.csv", fragment="HDF5"),
    C("slm-out-dir", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{d}/folder.h5", fragment="directory"),
    C("slm-out-exists", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{cal}", fragment="--replace"),
    C("slm-out-rotten", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{d}/cal_rot_value.h5",
      "--replace", fragment="fit 'camera' does not match"),
    C("slm-out-newer", "calibrate", "slm", "--curve", "{d}/slm_ok.csv", "--out", "{d}/cal_schema_99.h5",
      fragment="newer"),
]
PUMP = {
    "missing.csv": "no such file", "pump_gain.csv": "exceeds the input", "pump_gain_bad.csv": "declared gain",
    "pump_gain_word.csv": "declared gain 'lots'", "pump_gain_twice.csv": "each declare a gain",
    "pump_gain_low.csv": "declared gain 2", "pump_neg_input.csv": "powers >= 0",
    "pump_neg_output.csv": "cannot be negative", "pump_all_zero.csv": "no power above zero",
    "pump_swapped.csv": "exceeds the input", "slm_ok.csv": "missing input", "slm_binary.csv": "binary",
}
CASES += [C(f"pump-{n}", "calibrate", "absorber", "--pump", "{d}/" + n, fragment=f) for n, f in PUMP.items()]
PROBE = {
    "probe_above_one.csv": "above 1", "probe_percent.csv": "above 1", "probe_negative.csv": "cannot be negative",
    "probe_neg_pump.csv": "powers >= 0", "pump_ok.csv": "missing pump", "missing.csv": "no such file",
}
CASES += [C(f"probe-{n}", "calibrate", "absorber", "--pump", "{d}/pump_ok.csv", "--probe", "{d}/" + n, fragment=f)
          for n, f in PROBE.items()]
CASES += [
    C("absorber-no-pump", "calibrate", "absorber", "--probe", "{d}/probe_ok.csv", fragment="--pump"),
    C("absorber-with-bench", "calibrate", "absorber", "--pump", "{d}/pump_ok.csv", "--bench", "sim"),
]
CAMERA = {
    "missing.h5": "no such file", "folder.h5": "directory", "text.h5": "not an HDF5", "cam_half.h5": "",
    "cam_no_points.h5": "no /points", "cam_2d.h5": "expected (n_frames, rows, cols)", "cam_no_dark.h5": "missing",
    "cam_no_exposure.h5": "exposure_s", "cam_neg_exposure.h5": "exposure_s", "cam_text_exposure.h5": "exposure_s",
    "cam_neg_photons.h5": "photons_per_pixel", "cam_negative.h5": "negative pixel values",
    "cam_nan.h5": "NaN", "cam_swapped.h5": "darker than the dark", "cam_sizes.h5": "same frame size",
    "cam_strings.h5": "dtype", "cam_extlink.h5": "external link", "run_copy.h5": "no /points",
}
CASES += [C(f"camera-{n}", "calibrate", "camera", "--frames", "{d}/" + n, fragment=f) for n, f in CAMERA.items()]
CASES += [
    C("camera-name", "calibrate", "camera", "--frames", "{d}/cam_ok.h5", "--camera", "cam_x", fragment="cam_x"),
    C("camera-no-frames", "calibrate", "camera", fragment="--frames"),
    C("camera-bits-word", "calibrate", "camera", "--frames", "{d}/cam_ok.h5", "--bits", "x", fragment="invalid int"),
]
BENCH = {
    "missing.toml": "not found", "bench_latin1.toml": "UTF-8", "bench_binary.toml": "", "bench_syntax.toml": "TOML",
    "bench_no_bench.toml": "", "bench_n_in_zero.toml": "n_in", "bench_n_in_text.toml": "n_in",
    "bench_backend.toml": "magic", "bench_bits_text.toml": "bit_depth", "bench_bits_99.toml": "bit_depth",
    "bench_shape_neg.toml": "shape", "bench_settle_nan.toml": "settle_time_s",
    "bench_exposure_neg.toml": "exposure_s", "bench_unknown_device.toml": "mystery",
    "bench_unknown_key.toml": "settle_tiem_s", "grid_ok.toml": "",
}
CASES += [C(f"bench-{n}", "bench", "info", "--bench", "{d}/" + n, fragment=f) for n, f in BENCH.items()]
CASES += [
    C("bench-cti-missing", "bench", "info", "--open", "--bench", "{d}/bench_cti_missing.toml",
      fragment="GenTL producer file not found"),
    C("bench-cti-suffix", "bench", "info", "--open", "--bench", "{d}/bench_cti_suffix.toml",
      fragment="does not end in .cti"),
    C("bench-cti-folder", "bench", "info", "--open", "--bench", "{d}/bench_cti_folder.toml",
      fragment="not a regular file"),
    C("bench-cti-list", "bench", "info", "--open", "--bench", "{d}/bench_cti_list.toml", fragment="not found"),
    C("bench-cti-number", "bench", "info", "--open", "--bench", "{d}/bench_cti_number.toml", fragment="cti"),
    C("bench-cti-empty", "bench", "info", "--open", "--bench", "{d}/bench_cti_empty.toml", fragment="cti"),
    C("bench-option-unknown", "bench", "info", "--open", "--bench", "{d}/bench_option_unknown.toml",
      fragment="colour"),
    C("bench-cti-calibrate", "calibrate", "--bench", "{d}/bench_cti_missing.toml", "--out", "{d}/new_cal.h5",
      fragment="GenTL producer file not found"),
    C("bench-cti-compare", "compare", "--bench", "{d}/bench_cti_missing.toml", "--cal", "{cal}", "--report",
      "{new}", fragment="GenTL producer file not found"),
    C("bench-name", "bench", "info", "--bench", "no_such_bench", fragment="not found"),
    C("bench-no-action", "bench", fragment="choose an action"),
    C("bench-push-bad", "push", "--bench", "{d}/bench_backend.toml", "--weights", "{run16}", fragment="magic"),
    C("bench-train-bad", "train", "--system", "bench", "--bench", "{d}/bench_bits_text.toml", "--cal", "{cal}",
      "--epochs", "1", "--no-progress", fragment="bit_depth"),
    C("bench-calibrate-bad", "calibrate", "--bench", "{d}/bench_syntax.toml", "--out", "{d}/new_cal.h5",
      fragment="TOML"),
]
GRID = {
    "missing.toml": "no such grid file", "grid_syntax.toml": "TOML", "grid_latin1.toml": "UTF-8",
    "grid_unknown.toml": "learning_rate", "grid_no_axes.toml": "", "grid_empty_axis.toml": "seed",
    "grid_axis_nan.toml": "alpha0", "grid_both.toml": "hidden", "grid_base_and_axis.toml": "seed",
    "grid_no_task.toml": "task", "grid_dupe.toml": "twice", "grid_log0.toml": "log",
    "grid_range_bad.toml": "start, stop, num", "grid_table.toml": "extra", "grid_description.toml": "description",
    "bench_ok.toml": "", "text.h5": "", "folder.h5": "",
}
CASES += [C(f"grid-{n}", "sweep", "{d}/" + n, "--out", "{d}/sweep_out.h5", "--workers", "0", fragment=f)
          for n, f in GRID.items()]
CASES += [
    C("sweep-out-cal", "sweep", "{d}/grid_ok.toml", "--out", "{cal}", "--workers", "0", fragment="calibration"),
    C("sweep-out-run", "sweep", "{d}/grid_ok.toml", "--out", "{run}", "--workers", "0", fragment="run file"),
    C("sweep-out-csv-beside", "sweep", "{d}/grid_ok.toml", "--out", "{d}/results.h5", "--workers", "0",
      fragment="results.csv"),
    C("sweep-no-out", "sweep", "{d}/grid_ok.toml", "--workers", "0", fragment="--out"),
    C("sweep-workers-neg", "sweep", "{d}/grid_ok.toml", "--out", "{d}/sweep_out.h5", "--workers", "-2",
      fragment="--workers"),
    C("sweep-plot-missing", "sweep", "plot", "{d}/missing.h5", fragment="no such"),
    C("sweep-plot-cal", "sweep", "plot", "{cal}", fragment="not an optwin sweep"),
    C("sweep-plot-text", "sweep", "plot", "{d}/text.h5"),
]
TRAIN = [
    ("task", ("--task", "bogus"), "bogus"), ("epochs-neg", ("--epochs", "-3"), "--epochs"),
    ("epochs-zero", ("--epochs", "0"), "--epochs"), ("epochs-word", ("--epochs", "many"), "invalid int"),
    ("lr-nan", ("--lr", "nan"), "--lr"), ("lr-neg", ("--lr", "-0.5"), "--lr"), ("lr-zero", ("--lr", "0"), "--lr"),
    ("batch-neg", ("--batch", "-4"), "--batch"), ("batch-zero", ("--batch", "0"), "--batch"),
    ("layers-word", ("--layers", "2,x,2"), "--layers"), ("layers-input", ("--layers", "3,8,2"), "2"),
    ("layers-one", ("--layers", "2"), "--layers"), ("absorber", ("--absorber", "bogus"), "bogus"),
    ("alpha0-neg", ("--alpha0", "-1"), "--alpha0"), ("i-sat-zero", ("--i-sat", "0"), "--i-sat"),
    ("rule", ("--rule", "bogus"), "bogus"), ("loss", ("--loss", "bogus"), "bogus"),
    ("optimizer", ("--optimizer", "bogus"), "bogus"), ("system", ("--system", "bogus"), "bogus"),
    ("val-fraction", ("--val-fraction", "1.5"), "--val-fraction"), ("restarts", ("--restarts", "0"), "--restarts"),
    ("n-samples", ("--n-samples", "-5"), "--n-samples"), ("init-scale", ("--init-scale", "inf"), "--init-scale"),
    ("bench-only-flag", ("--mode", "optical"), "--mode"), ("resume-no-out", ("--resume",), "--out"),
    ("out-folder-missing", ("--out", "{d}/nowhere/run.h5"), "does not exist"),
    ("out-is-folder", ("--out", "{d}/folder.h5"), "folder"),
    ("out-calibration", ("--out", "{cal}"), "calibration"), ("out-csv", ("--out", "{d}/pump_ok.csv"), ""),
    ("out-notes", ("--out", "{d}/notes.txt"), ""), ("out-run-exists", ("--out", "{run}"), "--force"),
]
CASES += [C(f"train-{n}", "train", "--task", "moons", *a, "--no-progress", fragment=f) if n != "task" else
          C(f"train-{n}", "train", *a, "--no-progress", fragment=f) for n, a, f in TRAIN]
BENCH_TRAIN = [
    ("layers", ("--layers", "2,8,2"), "--layers"), ("alpha0", ("--alpha0", "3"), "--alpha0"),
    ("absorber", ("--absorber", "twolevel"), "--absorber"), ("loss", ("--loss", "ce"), "--loss"),
    ("optimizer", ("--optimizer", "sgd"), "--optimizer"), ("i-sat", ("--i-sat", "2"), "--i-sat"),
    ("epochs-zero", ("--epochs", "0"), "--epochs"), ("lr-zero", ("--lr", "0"), "--lr"),
    ("batch-zero", ("--batch", "0"), "--batch"), ("batch-neg", ("--batch", "-4"), "--batch"),
    ("lr-nan", ("--lr", "nan"), "--lr"), ("mode", ("--mode", "bogus"), "bogus"),
    ("no-cal", (), "--cal"), ("drift-every", ("--drift-every", "0"), "--drift-every"),
]
CASES += [C(f"bench-train-{n}", "train", "--system", "bench", "--bench", "sim",
            *(("--cal", "{cal}") if n != "no-cal" else ()), *a, "--no-progress", fragment=f)
          for n, a, f in BENCH_TRAIN]
CASES += [
    C("push-w-max", "push", "--bench", "sim", "--weights", "{run16}", "--w-max", "-1", fragment="--w-max"),
    C("push-hold-nan", "push", "--bench", "sim", "--weights", "{run16}", "--hold-s", "nan", fragment="--hold-s"),
    C("push-no-weights", "push", "--bench", "sim", fragment="--weights"),
    C("compare-no-report", "compare", "--bench", "sim", "--cal", "{cal}", fragment="--report"),
    C("compare-report-file", "compare", "--bench", "sim", "--cal", "{cal}", "--report", "{d}/notes.txt",
      fragment="notes.txt"),
    C("compare-inputs-zero", "compare", "--bench", "sim", "--cal", "{cal}", "--report", "{new}",
      "--inputs", "0", fragment="--inputs"),
    C("demo-epochs", "demo", "--out", "{d}/demo_out", "--epochs", "-1", fragment="--epochs"),
    C("demo-out-file", "demo", "--out", "{d}/notes.txt", fragment="notes.txt"),
    C("calibrate-only", "calibrate", "--bench", "sim", "--out", "{d}/new_cal.h5", "--only", "bogus",
      fragment="bogus"),
    C("calibrate-no-out", "calibrate", "--bench", "sim", fragment="--out"),
    C("calibrate-out-run", "calibrate", "--bench", "sim", "--out", "{run}", fragment="run file"),
    C("calibrate-out-existing", "calibrate", "--bench", "sim", "--out", "{cal}", fragment="--force"),
    C("calibrate-frames-in-bench-mode", "calibrate", "--bench", "sim", "--out", "{d}/new_cal.h5", "--frames",
      "{d}/cam_ok.h5", fragment="--frames"),
    C("unknown-command", "frobnicate", fragment="invalid choice"),
    C("no-command"),
]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def corpus(tmp_path_factory, sim_calibration_file):
    d = tmp_path_factory.mktemp("corpus")
    cal = d / "cal_copy.h5"
    shutil.copyfile(sim_calibration_file, cal)
    run, run16 = d / "run.h5", d / "run16.h5"
    for out, layers in ((run, ()), (run16, ("--layers", "2,16,2"))):
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["train", "--system", "twin", "--task", "moons", "--epochs", "2", *layers, "--out", str(out),
                         "--no-progress", "--json"]) == 0
    _files(d, cal, run, run16)
    return {"d": str(d), "cal": str(cal), "run": str(run), "run16": str(run16)}


def _snapshot(folder: Path) -> dict:
    """path -> (inode, size, modification time in ns) of every file: a file written, replaced
    (renamed over) or removed shows as a change."""
    out = {}
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            out[p] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(reason=case.xfail, strict=False)] if case.xfail else []
        yield pytest.param(case, id=case.id, marks=marks)


def test_corpus_is_large_and_unique():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(CASES) >= 150


@pytest.mark.parametrize("case", list(_params()))
def test_bad_input(corpus, case, capsys, monkeypatch):
    monkeypatch.delenv("OPTWIN_DEBUG", raising=False)
    new = str(Path(corpus["d"]) / f"new_{case.id}")           # a path no file is at
    argv = [a.format(new=new, **corpus) for a in case.argv]
    folder = Path(corpus["d"])
    before = _snapshot(folder)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:                      # argparse: usage line, then one error line
        code = exc.code
    except BaseException:                          # noqa: BLE001 - what the user would see as a traceback
        pytest.fail(f"traceback for optwin {' '.join(argv)}:\n{traceback.format_exc()}")
    out, err = capsys.readouterr()
    assert code == case.code, f"exit {code}, expected {case.code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out
    errors = [line for line in err.splitlines() if ": error:" in line]
    if argv and argv[0] in ("train", "bench", "push", "calibrate", "compare", "demo", "sweep") or errors:
        assert len(errors) == 1, err
        assert errors[0].startswith(f"optwin {argv[0]}") or errors[0].startswith("optwin:"), err
        assert err.strip().splitlines()[-1] == errors[0], f"the error is not the last line: {err}"
        if not err.lstrip().startswith("usage:"):
            assert len(err.strip().splitlines()) == 1, err
        assert case.fragment.lower() in errors[0].lower(), f"{case.fragment!r} not in: {errors[0]}"
    after = _snapshot(folder)
    changed = [p.name for p, h in before.items() if after.get(p) != h]
    assert not changed, f"existing files changed or removed: {changed}"
    leftovers = [p.name for p in after if p not in before and p.name.endswith(".tmp")]
    assert not leftovers, f"temporary files left behind: {leftovers}"
