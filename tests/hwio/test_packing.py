"""Video packings (hwio.packing): exhaustive over every level of every bit depth, pure numpy.

Each built-in packing is checked against its documented bit layout written out here with
plain integer arithmetic, level by level, independently of the module's field machinery.
"""
from __future__ import annotations

import numpy as np
import pytest

from hwio.packing import PACKINGS, BitPlanePacking, FieldPacking, get_packing, pack, unpack


def by_hand(name: str, v: int) -> tuple[int, int, int]:
    """RGB of level ``v`` in packing ``name``, from the documented layout."""
    if name == "gray8":
        return v, v, v
    if name == "rg16":
        return v // 256, v % 256, 0
    if name == "meadowlark10":
        return v // 4, 0, v % 4                                   # bits 9-2 red, 1-0 blue bits 1-0
    if name == "santec10":
        return (v // 64) * 16, ((v // 8) % 8) * 32, (v % 8) * 32  # 9-6 | 5-3 | 2-0, top-aligned
    raise KeyError(name)


FIELD_CASES = [("gray8", b) for b in range(1, 9)] + [("rg16", b) for b in (1, 8, 9, 10, 12, 16)] + \
    [("meadowlark10", b) for b in (1, 8, 10)] + [("santec10", b) for b in (1, 8, 10)]


@pytest.mark.parametrize("name,bits", FIELD_CASES)
def test_field_packing_matches_layout_for_every_level(name, bits):
    p = get_packing(name, bits)
    levels = np.arange(2 ** bits).reshape(1, -1).astype(np.uint16 if bits > 8 else np.uint8)
    rgb = p.pack(levels)
    assert rgb.dtype == np.uint8 and rgb.shape == (1, 2 ** bits, 3)
    expected = np.array([by_hand(name, v) for v in range(2 ** bits)], dtype=np.uint8)
    np.testing.assert_array_equal(rgb[0], expected)
    planar = p.pack_planar(levels)                       # what the window driver uploads
    assert planar.shape == (3, 1, 2 ** bits) and planar.flags.c_contiguous
    np.testing.assert_array_equal(planar[:, 0, :], expected.T)
    back = p.unpack(rgb, strict=True)
    np.testing.assert_array_equal(back, levels)
    assert back.dtype == p.level_dtype
    # 2-D frames (not just one row) and the module-level helpers agree
    frame = levels.reshape(-1)[np.random.default_rng(bits).integers(0, 2 ** bits, (7, 9))]
    np.testing.assert_array_equal(unpack(pack(frame, name), name), frame)


def test_level_1000_of_a_10_bit_panel():
    assert tuple(PACKINGS["rg16"].pack(np.array([[1000]]))[0, 0]) == (3, 232, 0)
    assert tuple(PACKINGS["meadowlark10"].pack(np.array([[1000]]))[0, 0]) == (250, 0, 0)
    assert tuple(PACKINGS["meadowlark10"].pack(np.array([[1003]]))[0, 0]) == (250, 0, 3)
    assert tuple(PACKINGS["santec10"].pack(np.array([[1000]]))[0, 0]) == (240, 160, 0)


def test_custom_field_spec_every_level_and_errors():
    p = get_packing("R[7:0]=L[9:2] B[7:6]=L[1:0]", 10)
    assert isinstance(p, FieldPacking) and p.level_bits == 10
    lv = np.arange(1024).reshape(32, 32)
    rgb = p.pack(lv)
    np.testing.assert_array_equal(rgb[..., 0], lv >> 2)
    np.testing.assert_array_equal(rgb[..., 1], 0)
    np.testing.assert_array_equal(rgb[..., 2], (lv & 3) << 6)
    np.testing.assert_array_equal(p.unpack(rgb, strict=True), lv)
    # a single bit, and fields in any order
    q = FieldPacking("q", "G[0]=L[1], R[0]=L[0]")
    np.testing.assert_array_equal(q.pack(np.array([[0, 1, 2, 3]]))[0], [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
    for spec, match in [("R[7:0]=L[9:1]", "maps 9 level bits onto 8"), ("R[8:0]=L[8:0]", "channel bits 0..7"),
                        ("R[7:0]=L[7:0] R[0]=L[8]", "already writes"), ("R[7:0]=L[9:2]", r"level bit\(s\) \[0, 1\]"),
                        ("X[1:0]=L[1:0]", "cannot read field"), ("", "no fields")]:
        with pytest.raises(ValueError, match=match):
            FieldPacking("bad", spec)
    with pytest.raises(ValueError, match="strict|not a valid packing"):
        bad = PACKINGS["gray8"].pack(np.zeros((2, 2), np.uint8))
        bad[1, 1, 2] = 5                                    # blue disagrees with red
        PACKINGS["gray8"].unpack(bad, strict=True)
    with pytest.raises(ValueError, match="carries levels 0..1023"):
        PACKINGS["santec10"].pack(np.array([[1024]]))


def test_choices_and_bit_depth_errors_are_one_line():
    with pytest.raises(ValueError) as err:
        get_packing("rgb565", 10, "slm1")
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("slm1: packing must be one of 'gray8' (<= 8 bit), 'rg16' (<= 16 bit)")
    assert "'dmd24' (1 bit)" in msg and "'santec10' (<= 10 bit)" in msg
    with pytest.raises(ValueError, match="'gray8' carries <= 8 bit levels, the panel has bit_depth=10; use 'rg16'"):
        get_packing("gray", 10, "slm1")
    with pytest.raises(ValueError, match="'dmd24' carries 1 bit"):
        get_packing("dmd24", 8, "input")
    assert get_packing("gray").name == "gray8"


@pytest.mark.parametrize("name,order", [("dmd24", "RGB"), ("dmd24_ti", "GRB")])
def test_dmd_24_planes_in_one_frame(name, order):
    p = PACKINGS[name]
    assert isinstance(p, BitPlanePacking) and p.supports(1) and not p.supports(2)
    rng = np.random.default_rng(3)
    patterns = rng.integers(0, 2, (24, 13, 17)).astype(np.uint8)
    rgb, planes = p.pack_planes(patterns)
    assert planes == list(range(24)) and rgb.shape == (13, 17, 3)
    # independent: bit k % 8 of channel order[k // 8] holds pattern k
    for k in range(24):
        ch = "RGB".index(order[k // 8])
        np.testing.assert_array_equal((rgb[..., ch] >> (k % 8)) & 1, patterns[k])
        assert p.plane_bit(k) == (ch, k % 8)
    # every RGB value is the weighted sum of its planes
    weights = np.zeros((24, 3), dtype=np.int64)
    for k in range(24):
        weights[k, "RGB".index(order[k // 8])] = 2 ** (k % 8)
    np.testing.assert_array_equal(rgb, np.einsum("kij,kc->ijc", patterns.astype(np.int64), weights))
    np.testing.assert_array_equal(p.unpack_planes(rgb), patterns)
    # the planar frame the window driver keeps: same planes
    planar = np.moveaxis(rgb, -1, 0).copy()
    p.set_plane_planar(planar, 1 - patterns[7], 7)
    np.testing.assert_array_equal(p.unpack_planes(np.moveaxis(planar, 0, -1))[7], 1 - patterns[7])
    # one plane replaced, the other 23 kept
    new = 1 - patterns[5]
    p.set_plane(rgb, new, 5)
    planes_now = p.unpack_planes(rgb)
    np.testing.assert_array_equal(planes_now[5], new)
    np.testing.assert_array_equal(np.delete(planes_now, 5, axis=0), np.delete(patterns, 5, axis=0))
    # a 1-bit level in one plane is one bit of one channel, not (1, 1, 1)
    single = p.pack(np.ones((1, 1), np.uint8), plane=10)
    expected = [0, 0, 0]
    expected["RGB".index(order[1])] = 4
    assert single[0, 0].tolist() == expected
    # fewer patterns from a later plane report their planes
    _, planes = p.pack_planes(patterns[:3], first_plane=20)
    assert planes == [20, 21, 22]
    with pytest.raises(ValueError, match="do not fit the 24 planes"):
        p.pack_planes(patterns[:5], first_plane=20)
    with pytest.raises(ValueError, match="holds 0 and 1 only"):
        p.pack(np.full((2, 2), 2))
    with pytest.raises(ValueError, match="plane must be an integer 0..23"):
        p.plane_bit(24)
