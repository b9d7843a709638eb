"""Wavefront-correction map files (hwio.wavefront): formats, scaling, one-line errors, records."""
from __future__ import annotations

import hashlib
import math

import cv2
import h5py
import numpy as np
import pytest

from hwio.wavefront import (file_sha256, load_bench_wavefront, load_wavefront, parse_wavefront_entry,
                            wavefront_record)

SHAPE = (6, 9)
TWO_PI = 2 * math.pi


def test_csv_in_rad_and_santec_levels(tmp_path):
    phase = np.random.default_rng(0).uniform(-4, 4, SHAPE)
    p = tmp_path / "map.csv"
    np.savetxt(p, phase, delimiter=",", header="flatness map, rad")
    np.testing.assert_array_equal(load_wavefront(p, SHAPE), phase)
    # whitespace separated .txt
    q = tmp_path / "map.txt"
    np.savetxt(q, phase)
    np.testing.assert_array_equal(load_wavefront(q, SHAPE), phase)
    # Santec: header row of column numbers, first column of row numbers, 10-bit levels (1024 = 2 pi)
    levels = np.random.default_rng(1).integers(0, 1024, SHAPE)
    rows = ["0," + ",".join(str(c) for c in range(SHAPE[1]))]
    rows += [f"{r}," + ",".join(str(v) for v in levels[r]) for r in range(SHAPE[0])]
    s = tmp_path / "santec.csv"
    s.write_text("\n".join(rows) + "\n")
    np.testing.assert_allclose(load_wavefront(s, SHAPE, fmt="santec_csv"), levels * TWO_PI / 1024, rtol=0, atol=1e-12)
    # a map made at 830 nm used at 780 nm: span 2 pi * 830 / 780 per 1024 levels
    span = TWO_PI * 830 / 780
    np.testing.assert_allclose(load_wavefront(s, SHAPE, fmt="santec_csv", span_rad=span), levels * span / 1024,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype,full", [(np.uint8, 255), (np.uint16, 65535)])
def test_png_gray_scaled_to_declared_span(tmp_path, dtype, full):
    img = np.random.default_rng(2).integers(0, full + 1, SHAPE).astype(dtype)
    p = tmp_path / "map.png"
    assert cv2.imwrite(str(p), img)
    np.testing.assert_allclose(load_wavefront(p, SHAPE), img * TWO_PI / full, rtol=0, atol=1e-12)
    np.testing.assert_allclose(load_wavefront(p, SHAPE, full_scale=full + 1, span_rad=math.pi),
                               img * math.pi / (full + 1), rtol=0, atol=1e-12)
    # a gray image saved as RGB (R = G = B) reads the same; a colour image does not
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.repeat(img[:, :, None], 3, axis=2))
    np.testing.assert_allclose(load_wavefront(rgb, SHAPE), img * TWO_PI / full, rtol=0, atol=1e-12)
    colour = np.repeat(img[:, :, None], 3, axis=2)
    colour[0, 0, 1] ^= 1
    cv2.imwrite(str(rgb), colour)
    with pytest.raises(ValueError, match="colour image"):
        load_wavefront(rgb, SHAPE)


def test_hdf5_and_npy(tmp_path):
    phase = np.random.default_rng(3).uniform(0, 6, SHAPE)
    h = tmp_path / "maps.h5"
    with h5py.File(h, "w") as f:
        f["flat/wavefront_rad"] = phase
    np.testing.assert_array_equal(load_wavefront(h, SHAPE), phase)        # the only 2-D dataset
    with h5py.File(h, "a") as f:
        f["other"] = np.zeros(SHAPE)
        f["levels"] = np.full(SHAPE, 128, np.uint8)
    with pytest.raises(ValueError, match="3 2-D datasets"):
        load_wavefront(h, SHAPE)
    np.testing.assert_array_equal(load_wavefront(h, SHAPE, dataset="flat/wavefront_rad"), phase)
    np.testing.assert_allclose(load_wavefront(h, SHAPE, dataset="levels"), np.full(SHAPE, 128 * TWO_PI / 255))
    with pytest.raises(ValueError, match="no dataset 'nope'"):
        load_wavefront(h, SHAPE, dataset="nope")
    n = tmp_path / "map.npy"
    np.save(n, phase)
    np.testing.assert_array_equal(load_wavefront(n, SHAPE), phase)


def test_errors_are_one_line_and_name_the_file(tmp_path):
    p = tmp_path / "map.csv"
    np.savetxt(p, np.zeros((5, 9)), delimiter=",")
    checks = [
        (lambda: load_wavefront(p, SHAPE, name="slm1"), r"^slm1: wavefront map map.csv is 5x9 but the panel is 6x9"),
        (lambda: load_wavefront(tmp_path / "nope.png", SHAPE), "does not exist"),
        (lambda: load_wavefront(tmp_path / "map.bmp", SHAPE), "cannot tell the format"),
        (lambda: load_wavefront(p, SHAPE, fmt="tiff"), "format must be one of"),
    ]
    bad = tmp_path / "nan.csv"
    vals = np.zeros(SHAPE)
    vals[4, 7] = np.nan
    np.savetxt(bad, vals, delimiter=",")
    checks.append((lambda: load_wavefront(bad, SHAPE), r"1 non-finite value\(s\) \(first at row 4, col 7"))
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    checks.append((lambda: load_wavefront(garbage, SHAPE), "cannot read wavefront map garbage.png as png"))
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3\n4,5\n")
    checks.append((lambda: load_wavefront(ragged, SHAPE), "unequal length"))
    words = tmp_path / "words.csv"
    words.write_text("a,b\nc,d\n")
    checks.append((lambda: load_wavefront(words, SHAPE), "cannot read wavefront map words.csv as csv"))
    badh5 = tmp_path / "bad.h5"
    badh5.write_bytes(b"nope")
    checks.append((lambda: load_wavefront(badh5, SHAPE), "cannot read wavefront map bad.h5 as hdf5"))
    for call, match in checks:
        with pytest.raises(ValueError, match=match) as err:
            call()
        assert "\n" not in str(err.value)


def test_bench_entry_resolves_relative_to_the_bench_file_and_records_the_file(tmp_path):
    maps = tmp_path / "maps"
    maps.mkdir()
    img = np.arange(54, dtype=np.uint8).reshape(SHAPE)
    cv2.imwrite(str(maps / "slm1.png"), img)
    where = "lab.toml: [devices.slm1].wavefront_map"
    entry = parse_wavefront_entry("maps/slm1.png", tmp_path, where)
    assert entry == {"path": str((maps / "slm1.png").resolve()), "format": "png"}
    entry2 = parse_wavefront_entry({"path": "maps/slm1.png", "span_rad": 3.0, "full_scale": 256}, tmp_path, where)
    np.testing.assert_allclose(load_bench_wavefront(entry2, SHAPE, "slm1"), img * 3.0 / 256)
    phase = load_bench_wavefront(entry, SHAPE, "slm1")
    rec = wavefront_record(entry, phase)
    assert rec["wavefront_map_sha256"] == hashlib.sha256((maps / "slm1.png").read_bytes()).hexdigest()
    assert rec["wavefront_map_sha256"] == file_sha256(maps / "slm1.png")
    assert rec["wavefront_map_path"] == entry["path"] and rec["wavefront_map_format"] == "png"
    assert rec["wavefront_map_shape"] == list(SHAPE) and rec["wavefront_map_rms_rad"] > 0
    for value, match in [("maps/none.png", "no file .*none.png; give the path relative to the bench file"),
                         ({"path": "maps/slm1.png", "colour": 1}, "unknown key 'colour'"),
                         ({"path": "maps/slm1.png", "span_rad": -1}, r"\.span_rad must be a number > 0"),
                         ({"format": "png"}, "needs a file path"), (3, "must be a path"),
                         ({"path": "maps/slm1.png", "format": "gif"}, r"\.format must be one of")]:
        with pytest.raises(ValueError, match=match) as err:
            parse_wavefront_entry(value, tmp_path, where)
        assert str(err.value).startswith(where)
