"""Property-based tests of every file reader: arbitrary bytes and mutated valid files give a
result or the reader's own one-line error, never any other exception (which the command line
would show as a traceback).

Readers: SLM / absorber CSV curves, camera photon-transfer HDF5, calibration file, run file,
bench TOML, sweep grid TOML and sweep results.  Valid files are made by the real writers;
mutations are text edits (lines, tokens, values), HDF5 edits through h5py (attributes of
other types and values, deleted or replaced objects, external and soft links), truncation and,
for the sealed calibration and run files, flipped bytes anywhere (the seal refuses them before
HDF5, which can crash on damaged metadata, reads the file).  Where a reader returns a result, the result
is checked for what the reader promises (finite numbers, consistent shapes).
"""
from __future__ import annotations

import itertools
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibration.calset import CalibrationFileError, CalibrationSet
from calibration.lab_files import (LabFileError, read_absorber_probe_csv, read_absorber_pump_csv, read_camera_h5,
                                   read_slm_csv)
from calibration.quantities import Fit, Quantity
from hwio.bench import BENCH_DIR, load_bench_config
from optwin.errors import UsageError
from optwin.runfile import load_run, save_run
from optwin.sweep.grid import load_grid
from optwin.sweep.store import read_results

# OPTWIN_FUZZ_EXAMPLES=2000 runs a deep, randomised search (the suite's default is short and repeatable)
_DEEP = int(os.environ.get("OPTWIN_FUZZ_EXAMPLES", "0"))
FUZZ = settings(derandomize=not _DEEP, max_examples=_DEEP or 30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.filter_too_much])
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[2]
_names = itertools.count()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("reader_properties")


def fresh(work: Path, suffix: str) -> Path:
    return work / f"case{next(_names)}{suffix}"


def outcome(reader, path, error):
    """``reader(path)``; its documented error is returned after checking it is one non-empty
    line that names the file; anything else propagates (and fails the test)."""
    try:
        return reader(path)
    except error as exc:
        text = str(exc)
        assert text.strip() and "\n" not in text and "Traceback" not in text, repr(text)
        assert str(path) in text or path.name in text, f"the message does not name the file: {text}"
        return exc


# ------------------------------------------------------------------------------------ valid files
def slm_text() -> str:
    levels = np.arange(0, 256, 17)
    power = 3.0 * np.sin(6.0 * (levels / 255) / 2) ** 2 + 0.2
    return "# grating 0/L\nlevel, first_order_power (uW)\n" + "".join(f"{lv},{p:.6f}\n" for lv, p in zip(levels, power))


def pump_text() -> str:
    p_in = np.geomspace(0.1, 100, 12)
    t = np.exp(-3.0 / (1 + p_in / 2.5))
    return "input (mW),output (mW)\n" + "".join(f"{a:.6g},{0.8 * a * b:.6g}\n" for a, b in zip(p_in, t))


def probe_text() -> str:
    pump = np.geomspace(0.1, 100, 12)
    return "pump\tprobe_transmission\n" + "".join(f"{a:.6g}\t{0.4 * np.exp(-3 / (1 + a / 2.5)):.6g}\n" for a in pump)


@pytest.fixture(scope="module")
def camera_file(work):
    rng = np.random.default_rng(1)
    path = work / "ptc.h5"
    with h5py.File(path, "w") as f:
        for i, t in enumerate((1e-4, 5e-4, 1e-3)):
            g = f.create_group(f"points/p{i}")
            g.attrs["exposure_s"] = t
            g.attrs["photons_per_pixel"] = t * 1e6
            for kind, mean in (("bright", 100 + t * 2e5), ("dark", 100.0)):
                g.create_dataset(kind, data=rng.poisson(mean, (2, 5, 6)).astype(np.uint16))
    return path


@pytest.fixture(scope="module")
def calibration_file(work):
    cs = CalibrationSet(bench_name="sim", bench_config={"bench": {"name": "sim"}})
    cs.add(Fit("camera", "emva1288", {"gain_adu_per_e": Quantity(0.52, 0.004, "ADU/e-"),
                                      "read_noise_e": Quantity(3.1, float("nan"), "e-")},
               arrays={"offset_map_adu": np.full((4, 5), 100.5), "lut": np.arange(8, dtype=np.int64)},
               info={"source": {"path": "x"}, "warnings": []}))
    cs.add(Fit("absorber", "twolevel", {"alpha0": Quantity(4.9, 0.1), "i_sat": Quantity(1.02, 0.03, "mW")},
               x=np.linspace(0, 1, 5), y=np.linspace(0, 2, 5), y_fit=np.linspace(0, 2, 5) + 0.01))
    cs.raw["camera/dark"] = np.arange(24, dtype=np.uint16).reshape(2, 3, 4)
    return cs.save(work / "cal.h5")


@pytest.fixture(scope="module")
def run_file(work):
    rng = np.random.default_rng(2)
    weights = [rng.normal(size=(4, 2)), rng.normal(size=(2, 4))]
    return save_run(work / "run.h5", weights, {"task": "moons", "layers": [2, 4, 2], "lr": 0.01, "absorber": None},
                    {"epoch": np.arange(3.0), "train_loss": np.array([1.0, 0.5, 0.4])},
                    {"step": 3, "m": [np.zeros((4, 2)), np.zeros((2, 4))]},
                    {"best": weights, "latest": weights})


@pytest.fixture(scope="module")
def sweep_results_file(work):
    from optwin.sweep.grid import parse_grid
    from optwin.sweep.store import SweepStore
    grid = parse_grid({"base": {"task": "moons", "epochs": 1}, "axes": {"seed": [0, 1]}})
    path = work / "sweep.h5"
    with SweepStore(path, grid) as store:
        for point in grid.points():
            store.add(point, {"status": "ok", "test_accuracy": 0.5, "seconds": 0.1})
    return path


# ------------------------------------------------------------------------------------ mutations
TOKENS = ["", "nan", "-inf", "1e400", "-1", "-0.5", "0", "3.5", "1e-300", "2", "10", "0x10", "1,5", '"', "'",
          "#", "[", "]", "=", "{", "true", "[]", "[1, 2]", "\"sim\"", "\"genicam\"", "'x.cti'", "\x00", "é", "9" * 30]


@st.composite
def mutated_text(draw, text: str):
    """``text`` with 1-3 edits: lines deleted, duplicated, inserted or replaced, one field or
    value replaced by a tricky token, or the text truncated."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["delete", "duplicate", "insert", "token", "value", "truncate"]))
        i = draw(st.integers(0, max(len(lines) - 1, 0)))
        if not lines:
            lines = [draw(st.text(max_size=30))]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "insert":
            lines.insert(i, draw(st.one_of(st.text(max_size=40), st.sampled_from(TOKENS))))
        elif op == "token":
            parts = lines[i].replace("\t", ",").replace(";", ",").split(",")
            parts[draw(st.integers(0, len(parts) - 1))] = draw(st.sampled_from(TOKENS))
            lines[i] = ",".join(parts)
        elif op == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            lines[i] = f"{key}= {draw(st.sampled_from(TOKENS))}"
        elif op == "truncate":
            lines = lines[:i]
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


ATTR_VALUES = st.one_of(
    st.integers(-2 ** 62, 2 ** 62), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
    st.binary(max_size=8).filter(lambda b: b"\x00" not in b),
    st.lists(st.integers(-5, 5), min_size=1, max_size=3).map(np.array),
    st.sampled_from([np.array([1.5, np.nan]), np.float32(2.5), np.uint8(7), '{"a": [1, 2]}', "[1]", "null",
                     "optwin-calibration", "optwin-run", 1, 2, 99, "1", -1]))
DATA_VALUES = st.one_of(
    st.sampled_from([np.zeros(0), np.float64(3.0), np.array([np.nan, 1.0]), np.array([[1, 2], [3, 4]], np.int16),
                     np.array([b"ab", b"c"]), np.ones((2, 3, 2)), np.array([True, False]), np.full((1, 1), -7.0),
                     np.array([1 + 2j])]),
    st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1, max_size=6).map(np.array))


def _objects(f: h5py.File) -> list[str]:
    names = ["/"]
    f.visit(lambda name: names.append("/" + name))
    return names


@st.composite
def h5_edits(draw):
    """A list of 1-3 structural edits, resolved against the file's objects when applied."""
    ops = []
    for _ in range(draw(st.integers(1, 3))):
        ops.append((draw(st.sampled_from(["set_attr", "del_attr", "del_obj", "replace", "to_group", "external",
                                          "soft", "element", "new_attr"])),
                    draw(st.integers(0, 10 ** 6)), draw(st.integers(0, 10 ** 6)), draw(ATTR_VALUES), draw(DATA_VALUES)))
    return ops


def apply_edits(src: Path, dst: Path, ops) -> None:
    shutil.copyfile(src, dst)
    with h5py.File(dst, "a") as f:
        for op, a, b, attr_value, data_value in ops:
            names = _objects(f)
            name = names[a % len(names)]
            obj = f[name]
            attrs = list(obj.attrs)
            try:
                if op == "set_attr" and attrs:
                    obj.attrs[attrs[b % len(attrs)]] = attr_value
                elif op == "new_attr":
                    obj.attrs[["kind", "schema_version", "sha256", "info", "model", "value", "units"][b % 7]] = attr_value
                elif op == "del_attr" and attrs:
                    del obj.attrs[attrs[b % len(attrs)]]
                elif name == "/":
                    continue
                elif op == "del_obj":
                    del f[name]
                elif op == "replace":
                    del f[name]
                    f[name] = data_value
                elif op == "to_group":
                    del f[name]
                    f.create_group(name)
                elif op == "external":
                    del f[name]
                    f[name] = h5py.ExternalLink(str(src), name)
                elif op == "soft":
                    del f[name]
                    f[name] = h5py.SoftLink(names[b % len(names)])
                elif op == "element" and isinstance(obj, h5py.Dataset) and obj.size and obj.dtype.kind in "iuf":
                    flat = obj[()].reshape(-1)
                    flat[b % flat.size] = -1 if obj.dtype.kind != "f" else [np.nan, -1.0, 1e300][b % 3]
                    obj[...] = flat.reshape(obj.shape)
            except (TypeError, ValueError, OSError, KeyError, OverflowError):
                continue                            # an edit h5py cannot make: the next one


def flipped(data: bytes, draw, start: int = 0) -> bytes:
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        b[draw(st.integers(start, len(b) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        b = b[:draw(st.integers(0, len(b)))]
    return bytes(b)


# ------------------------------------------------------------------------------------ CSV curves
CSV_READERS = [(read_slm_csv, slm_text), (read_absorber_pump_csv, pump_text), (read_absorber_probe_csv, probe_text)]


def _check_csv_result(result):
    if isinstance(result, Exception):
        return
    a, b = result
    assert a.shape == b.shape and a.ndim == 1 and a.size >= 1
    assert np.all(np.isfinite(a)) and np.all(np.isfinite(b))


@pytest.mark.parametrize("reader, text", CSV_READERS, ids=["slm", "pump", "probe"])
def test_valid_csv_files_read(work, reader, text):
    path = fresh(work, ".csv")
    path.write_text(text())
    a, b = reader(path)
    assert a.size == len(text().splitlines()) - (2 if reader is read_slm_csv else 1)


@pytest.mark.parametrize("reader, text", CSV_READERS, ids=["slm", "pump", "probe"])
@FUZZ
@given(data=st.data())
def test_csv_readers_on_mutated_and_arbitrary_files(work, reader, text, data):
    path = fresh(work, ".csv")
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(st.binary(max_size=300)))
    elif data.draw(st.booleans()):
        path.write_bytes(flipped(text().encode(), data.draw))
    else:
        path.write_text(data.draw(mutated_text(text())), encoding="utf-8", errors="surrogatepass")
    _check_csv_result(outcome(reader, path, LabFileError))



def write_damaged_h5(path, valid, draw, kinds):
    """``path`` <- one damaged variant of the valid HDF5 file ``valid``: arbitrary bytes, the HDF5
    signature and garbage, a truncation, bit flips or HDF5-level edits (``kinds``: which ones)."""
    kind = draw(st.sampled_from(kinds))
    if kind == "bytes":
        path.write_bytes(draw(st.binary(max_size=300)))
    elif kind == "signature":
        path.write_bytes(HDF5_SIGNATURE + draw(st.binary(max_size=300)))
    elif kind == "truncated":
        raw = valid.read_bytes()
        path.write_bytes(raw[:draw(st.integers(0, len(raw) - 1))])
    elif kind == "flips":                           # anywhere: the seal catches them before HDF5 reads
        path.write_bytes(flipped(valid.read_bytes(), draw))
    else:
        apply_edits(valid, path, draw(h5_edits()))

# ------------------------------------------------------------------------------------ camera HDF5
@FUZZ
@given(data=st.data())
def test_camera_file_reader(work, camera_file, data):
    path = fresh(work, ".h5")
    write_damaged_h5(path, camera_file, data.draw, ["bytes", "signature", "truncated", "edits"])
    result = outcome(read_camera_h5, path, LabFileError)
    if not isinstance(result, Exception):
        assert len(result) >= 1
        for p in result:
            assert np.all(np.isfinite(p.bright)) and p.bright.min() >= 0 and p.exposure_s >= 0


# ------------------------------------------------------------------------------------ calibration file
@FUZZ
@given(data=st.data())
def test_calibration_file_reader(work, calibration_file, data):
    path = fresh(work, ".h5")
    write_damaged_h5(path, calibration_file, data.draw, ["bytes", "signature", "flips", "edits", "edits"])
    result = outcome(CalibrationSet.load, path, CalibrationFileError)
    if isinstance(result, CalibrationSet):
        for fit in result.fits.values():
            assert all(math.isfinite(q.value) for q in fit.quantities.values())


def test_calibration_edits_are_refused_and_name_the_fit(work, calibration_file):
    """Any edit after writing is refused (the seal); an edited value names its fit."""
    path = fresh(work, ".h5")
    shutil.copyfile(calibration_file, path)
    with h5py.File(path, "a") as f:
        f.attrs["bench_name"] = "another bench"                # readable, but not what was written
    with pytest.raises(CalibrationFileError, match="changed after optwin wrote it"):
        CalibrationSet.load(path)
    shutil.copyfile(calibration_file, path)
    with h5py.File(path, "a") as f:
        f["fits/absorber/quantities/alpha0"].attrs["value"] = 4.9000001
    with pytest.raises(CalibrationFileError, match="fit 'absorber' does not match the checksum"):
        CalibrationSet.load(path)


# ------------------------------------------------------------------------------------ run file
@FUZZ
@given(data=st.data())
def test_run_file_reader(work, run_file, data):
    path = fresh(work, ".h5")
    write_damaged_h5(path, run_file, data.draw, ["bytes", "signature", "flips", "edits", "edits"])   # sealed too
    result = outcome(load_run, path, UsageError)
    if isinstance(result, dict):
        ws = result["weights"]
        assert ws and all(w.ndim == 2 and np.all(np.isfinite(w)) for w in ws)
        assert all(ws[k].shape[1] == ws[k - 1].shape[0] for k in range(1, len(ws)))


# ------------------------------------------------------------------------------------ TOML files
def _bench(path):
    return load_bench_config(path)


@pytest.mark.parametrize("source", [BENCH_DIR / "sim.toml", BENCH_DIR / "lab_template.toml"], ids=["sim", "lab"])
@FUZZ
@given(data=st.data())
def test_bench_toml_reader(work, source, data):
    path = fresh(work, ".toml")
    text = source.read_text()
    if data.draw(st.integers(0, 4)) == 0:
        path.write_bytes(data.draw(st.binary(max_size=300)))
    else:
        path.write_text(data.draw(mutated_text(text)), encoding="utf-8", errors="surrogatepass")
    result = outcome(_bench, path, ValueError)
    if not isinstance(result, Exception):
        assert result.sizes.n_in >= 1 and result.sizes.n_out >= 1


@FUZZ
@given(data=st.data())
def test_sweep_grid_reader(work, data):
    path = fresh(work, ".toml")
    text = (REPO / "datasets" / "sweeps" / "example.toml").read_text()
    if data.draw(st.integers(0, 4)) == 0:
        path.write_bytes(data.draw(st.binary(max_size=300)))
    else:
        path.write_text(data.draw(mutated_text(text)), encoding="utf-8", errors="surrogatepass")
    result = outcome(load_grid, path, ValueError)
    if not isinstance(result, Exception):
        assert len(result.points()) >= 1


@FUZZ
@given(data=st.data())
def test_sweep_results_reader(work, sweep_results_file, data):
    path = fresh(work, ".h5")
    if data.draw(st.integers(0, 3)) == 0:
        path.write_bytes(HDF5_SIGNATURE + data.draw(st.binary(max_size=200)))
    else:
        apply_edits(sweep_results_file, path, data.draw(h5_edits()))
    outcome(read_results, path, ValueError)
