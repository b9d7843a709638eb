"""Video packings: how a panel level travels in the 24-bit RGB of a video signal (pure numpy).

A panel that the computer drives as a monitor (:class:`hwio.drivers.window_slm.WindowSLM`)
receives 8 bits of red, green and blue per pixel.  How its firmware turns those 24 bits
into a level differs between vendors; a *packing* says where every level bit goes.

Field packings (table-driven)
-----------------------------
A field packing is a list of fields written ``C[hi:lo]=L[hi:lo]``: level bits ``hi..lo``
go to bits ``hi..lo`` of colour channel ``C`` (``R``, ``G`` or ``B``; a single bit is
``C[k]=L[j]``).  Channel bits that no field names are 0.  The built-in table
(:data:`PACKINGS`, ``L`` = level, bit 0 the least significant):

================  =============================================  ==========  ==================
name              fields                                         panel       level 1000 as RGB
================  =============================================  ==========  ==================
``gray8``         ``R[7:0]=L[7:0] G[7:0]=L[7:0] B[7:0]=L[7:0]``  <= 8 bit    (8-bit only)
``rg16``          ``R[7:0]=L[15:8] G[7:0]=L[7:0]``               <= 16 bit   (3, 232, 0)
``meadowlark10``  ``R[7:0]=L[9:2] B[1:0]=L[1:0]``                <= 10 bit   (250, 0, 0)
``santec10``      ``R[7:4]=L[9:6] G[7:5]=L[5:3] B[7:5]=L[2:0]``  <= 10 bit   (240, 160, 0)
================  =============================================  ==========  ==================

* ``gray8`` (alias ``gray``): 8-bit gray panels and DMDs in video mode.
* ``rg16``: high byte in red, low byte in green (panels reading 9-16 bit levels from two
  channels).
* ``meadowlark10``, Meadowlark-style HDMI: the 8 most significant bits of a 10-bit level in
  red (``R = L >> 2``), the 2 least significant bits in bits 1..0 of blue
  (``B = L & 3``), green 0.  An 8-bit gray image then reads as about 4x its gray level.
* ``santec10``, Santec-style 10 bits spread over all three channels, most significant
  first and aligned to the top of each channel: ``L[9:6]`` in the high nibble of red,
  ``L[5:3]`` in the top 3 bits of green, ``L[2:0]`` in the top 3 bits of blue.

Neither vendor's bit assignment could be checked against its manual while this module was
written: the two 10-bit rows are optwin's reading of "8 bits red + 2 bits blue" and
"10 bits over RGB".  Before trusting either, show level 1000 (``0b11_1110_1000``) and
check the RGB above against the panel's manual or its vendor software; a panel with another
assignment is described by its own field list, e.g. ``packing = "R[7:0]=L[9:2] B[7:6]=L[1:0]"``
in the bench file (:func:`get_packing` accepts any such spec).

Layouts: :meth:`FieldPacking.pack_planar` builds the frame as red, green and blue planes
(3, rows, cols), contiguous and fast (what the window driver uploads); :meth:`FieldPacking.pack`
returns its interleaved (rows, cols, 3) view; :meth:`FieldPacking.unpack` reads an interleaved
frame (a screenshot) back into levels.

DMD bit-plane (pattern) mode
----------------------------
A DMD controller in video pattern mode (e.g. TI DLPC350 / LightCrafter 4500, DLPC900)
shows every 24-bit video frame as up to 24 binary patterns, one per bit plane, in a fixed
order; the pattern's index k in that order selects the plane.  ``dmd24``: plane k is bit
``k % 8`` of channel ``k // 8`` in R, G, B order (planes 0-7 red, 8-15 green, 16-23 blue).
``dmd24_ti``: the TI order (DLPC350 programmer's guide, pattern number mapping): planes
0-7 green, 8-15 red, 16-23 blue, bit ``k % 8``.  A 1-bit level is one bit of one channel:
pattern pixel 1 in plane 9 of ``dmd24`` is G = 2, not RGB (1, 1, 1).
:meth:`BitPlanePacking.pack_planes` packs up to 24 patterns into one frame and reports the
plane of each; :meth:`BitPlanePacking.set_plane` replaces one plane and keeps the others.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

__all__ = ["Field", "FieldPacking", "BitPlanePacking", "PACKINGS", "ALIASES", "get_packing",
           "packing_choices", "pack", "unpack"]

CHANNELS = "RGB"
_FIELD_RE = re.compile(r"^([RGB])\[(\d+)(?::(\d+))?\]=L\[(\d+)(?::(\d+))?\]$")


@dataclass(frozen=True)
class Field:
    """Level bits ``level_lsb .. level_lsb + n_bits - 1`` -> bits ``channel_lsb ..`` of one channel."""

    channel: int        # 0 red, 1 green, 2 blue
    channel_lsb: int
    level_lsb: int
    n_bits: int

    def __str__(self):
        c, lo, n, ll = CHANNELS[self.channel], self.channel_lsb, self.n_bits, self.level_lsb
        if n == 1:
            return f"{c}[{lo}]=L[{ll}]"
        return f"{c}[{lo + n - 1}:{lo}]=L[{ll + n - 1}:{ll}]"


class FieldPacking:
    """A packing described by fields ``C[hi:lo]=L[hi:lo]`` (module notes).

    Parameters
    ----------
    name : the packing's name (used in messages).
    spec : fields separated by spaces or commas, e.g. ``"R[7:0]=L[9:2] B[1:0]=L[1:0]"``.
    description : one line for listings.

    Attributes
    ----------
    level_bits : number of level bits the packing carries (levels 0 .. 2**level_bits - 1);
        panels of this bit depth or less can use it.
    fields : tuple of :class:`Field`.
    """

    plane_mode = False

    def __init__(self, name: str, spec: str, description: str = ""):
        self.name = str(name)
        self.description = description
        fields = []
        used = np.zeros((3, 8), dtype=bool)
        tokens = [t for t in re.split(r"[\s,;]+", str(spec).strip()) if t]
        if not tokens:
            raise ValueError(f"packing {name!r}: no fields; write them as 'R[7:0]=L[9:2] B[1:0]=L[1:0]'")
        for tok in tokens:
            m = _FIELD_RE.match(tok.replace(" ", ""))
            if m is None:
                raise ValueError(f"packing {name!r}: cannot read field {tok!r}; write C[hi:lo]=L[hi:lo] "
                                 f"with C one of R, G, B (e.g. 'R[7:0]=L[9:2]')")
            ch, c_hi, c_lo, l_hi, l_lo = m.groups()
            c_hi, l_hi = int(c_hi), int(l_hi)
            c_lo = c_hi if c_lo is None else int(c_lo)
            l_lo = l_hi if l_lo is None else int(l_lo)
            if c_hi < c_lo or l_hi < l_lo or c_hi > 7 or l_hi > 15:
                raise ValueError(f"packing {name!r}: field {tok!r} must give [hi:lo] with hi >= lo, channel "
                                 f"bits 0..7 and level bits 0..15")
            if c_hi - c_lo != l_hi - l_lo:
                raise ValueError(f"packing {name!r}: field {tok!r} maps {l_hi - l_lo + 1} level bits onto "
                                 f"{c_hi - c_lo + 1} channel bits; make the widths equal")
            c = CHANNELS.index(ch)
            if used[c, c_lo:c_hi + 1].any():
                raise ValueError(f"packing {name!r}: field {tok!r} writes channel bits another field "
                                 f"already writes; each channel bit holds one level bit")
            used[c, c_lo:c_hi + 1] = True
            fields.append(Field(c, c_lo, l_lo, c_hi - c_lo + 1))
        carried = np.zeros(16, dtype=bool)
        for f in fields:
            carried[f.level_lsb:f.level_lsb + f.n_bits] = True
        self.level_bits = int(np.flatnonzero(carried).max()) + 1
        missing = np.flatnonzero(~carried[:self.level_bits])
        if missing.size:
            raise ValueError(f"packing {name!r}: level bit(s) {missing.tolist()} go nowhere, so levels cannot "
                             f"be read back; add a field for them")
        self.fields = tuple(fields)
        self.spec = " ".join(str(f) for f in fields)
        self.level_dtype = np.dtype(np.uint8 if self.level_bits <= 8 else np.uint16)

    # ------------------------------------------------------------------------------------------
    def supports(self, bit_depth: int) -> bool:
        """Whether a panel of ``bit_depth`` bits can be driven with this packing."""
        return 1 <= int(bit_depth) <= self.level_bits

    def supported_depths(self) -> str:
        """The panel bit depths this packing serves, for messages (``'<= 10 bit'``)."""
        return f"<= {self.level_bits} bit"

    def _check_levels(self, levels) -> np.ndarray:
        lv = np.asarray(levels)
        if lv.ndim != 2 or lv.dtype.kind not in "iu":
            raise ValueError(f"packing {self.name!r}: levels must be a 2-D integer frame, got "
                             f"{lv.dtype} {lv.shape}")
        if lv.size and (int(lv.min()) < 0 or int(lv.max()) >= 2 ** self.level_bits):
            raise ValueError(f"packing {self.name!r} carries levels 0..{2 ** self.level_bits - 1}, got "
                             f"{int(lv.min())}..{int(lv.max())}; use a packing for this bit depth")
        return lv

    def pack_planar(self, levels, out: np.ndarray | None = None, check: bool = True) -> np.ndarray:
        """Planar RGB frame (3, rows, cols) uint8 (red, green, blue planes) showing ``levels``.

        The planar layout keeps every operation on contiguous memory (interleaving R, G, B
        byte by byte is what makes packing slow in numpy); :meth:`pack` is its interleaved view.

        Parameters
        ----------
        levels : integer frame (rows, cols), levels 0 .. 2**level_bits - 1.
        out : optional C-contiguous (3, rows, cols) uint8 array to write into.
        check : validate the level range (skip only for frames already checked).
        """
        lv = self._check_levels(levels) if check else np.asarray(levels)
        shape = (3,) + lv.shape
        if out is None:
            out = np.empty(shape, dtype=np.uint8)
        elif out.shape != shape or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise ValueError(f"packing {self.name!r}: out must be a C-contiguous uint8 array of shape {shape}")
        work = lv.astype(np.uint16 if self.level_bits > 8 else np.uint8, copy=False)
        tmp = None
        for c in range(3):
            plane = out[c]
            fields = [f for f in self.fields if f.channel == c]
            if not fields:
                plane.fill(0)
            for k, f in enumerate(fields):
                whole = f.level_lsb == 0 and f.channel_lsb == 0 and f.level_lsb + f.n_bits >= self.level_bits
                if whole and k == 0:
                    np.copyto(plane, work, casting="unsafe")     # the level itself (gray): one copy
                    continue
                if tmp is None:
                    tmp = np.empty_like(work)
                kind = work.dtype.type
                np.right_shift(work, kind(f.level_lsb), out=tmp)
                if f.level_lsb + f.n_bits < self.level_bits:
                    np.bitwise_and(tmp, kind((1 << f.n_bits) - 1), out=tmp)
                if f.channel_lsb:   # (a multiply: numpy's uint8 left shift is several times slower)
                    np.multiply(tmp, kind(1 << f.channel_lsb), out=tmp)
                if k == 0:
                    np.copyto(plane, tmp, casting="unsafe")       # the field fits in 8 bits
                else:
                    np.bitwise_or(plane, tmp, out=plane, casting="unsafe")
        return out

    def pack(self, levels, out: np.ndarray | None = None, check: bool = True) -> np.ndarray:
        """RGB frame (rows, cols, 3) uint8 showing the level frame ``levels`` (rows, cols).

        Returns the interleaved view of :meth:`pack_planar` (``out``: a (3, rows, cols) planar
        buffer to pack into).  Copy it with ``np.ascontiguousarray`` where interleaved memory
        is needed.
        """
        return np.moveaxis(self.pack_planar(levels, out, check), 0, -1)

    def unpack(self, rgb, strict: bool = False) -> np.ndarray:
        """Levels (``level_dtype``, rows x cols) an RGB frame (rows, cols, 3) carries.

        Every level bit is read from the first field that carries it.  With ``strict`` the
        frame must be exactly what :meth:`pack` makes of those levels (replicated fields
        agree, unused channel bits are 0); otherwise ValueError.
        """
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint8:
            raise ValueError(f"packing {self.name!r}: expected a (rows, cols, 3) uint8 RGB frame, got "
                             f"{arr.dtype} {arr.shape}")
        lv = np.zeros(arr.shape[:2], dtype=np.uint16)
        done = np.zeros(16, dtype=bool)
        for f in self.fields:
            bits = [b for b in range(f.n_bits) if not done[f.level_lsb + b]]
            if not bits:
                continue
            ch = arr[..., f.channel].astype(np.uint16)
            part = (ch >> f.channel_lsb) & ((1 << f.n_bits) - 1)
            mask = sum(1 << b for b in bits)
            lv |= (part & mask) << f.level_lsb
            done[[f.level_lsb + b for b in bits]] = True
        out = lv.astype(self.level_dtype)
        if strict:
            bad = np.any(self.pack(out, check=False) != arr[..., :3], axis=-1)
            if bad.any():
                r, c = np.argwhere(bad)[0]
                raise ValueError(f"packing {self.name!r}: {int(bad.sum())} pixel(s) are not a valid packing "
                                 f"(first at row {r}, col {c}: RGB {tuple(int(v) for v in arr[r, c, :3])}); "
                                 f"the display path changes the colours (colour management, scaling?)")
        return out

    def __repr__(self):
        return f"FieldPacking({self.name!r}, {self.spec!r})"


class BitPlanePacking:
    """DMD pattern mode: 24 binary bit planes in one RGB frame (module notes).

    Parameters
    ----------
    name : packing name.
    channel_order : the channels of planes 0-7, 8-15, 16-23 (``"RGB"`` or TI's ``"GRB"``).
    description : one line for listings.

    Attributes
    ----------
    n_planes : 24.
    level_bits : 1 (a pattern pixel is on or off).
    """

    plane_mode = True
    n_planes = 24
    level_bits = 1
    level_dtype = np.dtype(np.uint8)

    def __init__(self, name: str, channel_order: str = "RGB", description: str = ""):
        order = str(channel_order).upper()
        if sorted(order) != sorted(CHANNELS):
            raise ValueError(f"packing {name!r}: channel_order must be a permutation of 'RGB', got {channel_order!r}")
        self.name = name
        self.description = description
        self.channel_order = order
        self.spec = " ".join(f"{c}[7:0]=planes[{8 * i + 7}:{8 * i}]" for i, c in enumerate(order))

    def supports(self, bit_depth: int) -> bool:
        return int(bit_depth) == 1

    def supported_depths(self) -> str:
        return "1 bit"

    def plane_bit(self, plane: int) -> tuple[int, int]:
        """(channel index 0=R 1=G 2=B, bit) that holds bit plane ``plane`` (0..23)."""
        k = self._check_plane(plane)
        return CHANNELS.index(self.channel_order[k // 8]), k % 8

    def _check_plane(self, plane) -> int:
        if isinstance(plane, bool) or int(plane) != plane or not 0 <= int(plane) < self.n_planes:
            raise ValueError(f"packing {self.name!r}: plane must be an integer 0..{self.n_planes - 1}, got {plane!r}")
        return int(plane)

    @staticmethod
    def _check_pattern(pattern, name) -> np.ndarray:
        p = np.asarray(pattern)
        if p.ndim != 2 or p.dtype.kind not in "iub":
            raise ValueError(f"packing {name!r}: a pattern must be a 2-D integer or bool frame, "
                             f"got {p.dtype} {p.shape}")
        if p.dtype != bool and p.size and (int(p.min()) < 0 or int(p.max()) > 1):
            raise ValueError(f"packing {name!r}: a bit-plane pattern holds 0 and 1 only, got "
                             f"{int(p.min())}..{int(p.max())}")
        return p

    def set_plane_planar(self, planes: np.ndarray, pattern, plane: int) -> np.ndarray:
        """Write binary ``pattern`` (rows, cols) into bit plane ``plane`` of a planar frame (3, rows, cols).

        In place; the other 23 planes are kept.  Contiguous per-channel operations (fast).
        """
        p = self._check_pattern(pattern, self.name)
        c, b = self.plane_bit(plane)
        if planes.shape != (3,) + p.shape or planes.dtype != np.uint8:
            raise ValueError(f"packing {self.name!r}: planar frame must be uint8 of shape {(3,) + p.shape}, "
                             f"got {planes.dtype} {planes.shape}")
        ch = planes[c]
        np.bitwise_and(ch, np.uint8(0xFF ^ (1 << b)), out=ch)
        bits = np.multiply(p.astype(np.uint8, copy=False), np.uint8(1 << b))   # 0/1 -> bit b
        np.bitwise_or(ch, bits, out=ch)
        return planes

    def set_plane(self, rgb: np.ndarray, pattern, plane: int) -> np.ndarray:
        """Write binary ``pattern`` (rows, cols) into bit plane ``plane`` of ``rgb`` (rows, cols, 3) in place.

        The other 23 planes are kept.
        """
        p = self._check_pattern(pattern, self.name)
        if rgb.shape != p.shape + (3,) or rgb.dtype != np.uint8:
            raise ValueError(f"packing {self.name!r}: frame must be uint8 of shape {p.shape + (3,)}, "
                             f"got {rgb.dtype} {rgb.shape}")
        self.set_plane_planar(np.moveaxis(rgb, -1, 0), p, plane)
        return rgb

    def pack_planar(self, levels, plane: int = 0, out: np.ndarray | None = None,
                    check: bool = True) -> np.ndarray:
        """Planar frame (3, rows, cols) holding binary ``levels`` in ``plane``; other planes 0 (or ``out``'s)."""
        p = self._check_pattern(levels, self.name) if check else np.asarray(levels)
        if out is None:
            out = np.zeros((3,) + p.shape, dtype=np.uint8)
        return self.set_plane_planar(out, p, plane)

    def pack(self, levels, plane: int = 0, out: np.ndarray | None = None, check: bool = True) -> np.ndarray:
        """RGB frame (rows, cols, 3) holding binary ``levels`` in bit plane ``plane``; every other plane 0.

        ``out``: a planar (3, rows, cols) frame whose other planes are kept.
        """
        return np.moveaxis(self.pack_planar(levels, plane, out, check), 0, -1)

    def pack_planes(self, patterns, first_plane: int = 0) -> tuple[np.ndarray, list[int]]:
        """Pack up to 24 binary patterns into one RGB frame.

        Parameters
        ----------
        patterns : sequence (or (n, rows, cols) array) of binary frames; pattern i goes to
            plane ``first_plane + i``.
        first_plane : plane of the first pattern.

        Returns
        -------
        (rgb, planes) : the (rows, cols, 3) uint8 frame (the interleaved view of a planar
            buffer, ``np.moveaxis(rgb, -1, 0)``) and the plane index of every pattern (the
            index in the controller's pattern sequence that shows it).
        """
        pats = [self._check_pattern(p, self.name) for p in patterns]
        first = self._check_plane(first_plane)
        if not pats or first + len(pats) > self.n_planes:
            raise ValueError(f"packing {self.name!r}: {len(pats)} pattern(s) from plane {first} do not fit the "
                             f"{self.n_planes} planes of a frame; split them over several frames")
        shape = pats[0].shape
        if any(p.shape != shape for p in pats):
            raise ValueError(f"packing {self.name!r}: all patterns must have the same shape, got "
                             f"{sorted({p.shape for p in pats})}")
        planes = list(range(first, first + len(pats)))
        planar = np.zeros((3,) + shape, dtype=np.uint8)
        for k, p in zip(planes, pats):
            c, b = self.plane_bit(k)
            planar[c] |= p.astype(np.uint8, copy=False) << np.uint8(b)
        return np.moveaxis(planar, 0, -1), planes

    def unpack_planes(self, rgb) -> np.ndarray:
        """All 24 planes of an RGB frame, (24, rows, cols) uint8 of 0/1, plane index first."""
        arr = np.asarray(rgb)
        if arr.ndim != 3 or arr.shape[2] < 3 or arr.dtype != np.uint8:
            raise ValueError(f"packing {self.name!r}: expected a (rows, cols, 3) uint8 RGB frame, got "
                             f"{arr.dtype} {arr.shape}")
        out = np.empty((self.n_planes,) + arr.shape[:2], dtype=np.uint8)
        for k in range(self.n_planes):
            c, b = self.plane_bit(k)
            np.right_shift(arr[..., c], b, out=out[k])
            out[k] &= 1
        return out

    def unpack(self, rgb, plane: int = 0, strict: bool = False) -> np.ndarray:
        """The binary pattern in bit plane ``plane`` of an RGB frame (rows, cols) uint8."""
        arr = np.asarray(rgb)
        c, b = self.plane_bit(plane)
        return (arr[..., c] >> b) & 1

    def __repr__(self):
        return f"BitPlanePacking({self.name!r}, channel_order={self.channel_order!r})"


#: The built-in packings by name (module notes).
PACKINGS: dict = {
    "gray8": FieldPacking("gray8", "R[7:0]=L[7:0] G[7:0]=L[7:0] B[7:0]=L[7:0]",
                          "8-bit gray: R = G = B = level"),
    "rg16": FieldPacking("rg16", "R[7:0]=L[15:8] G[7:0]=L[7:0]",
                         "high byte in red, low byte in green, blue 0"),
    "meadowlark10": FieldPacking("meadowlark10", "R[7:0]=L[9:2] B[1:0]=L[1:0]",
                                 "Meadowlark-style HDMI: level bits 9-2 in red, bits 1-0 in blue bits 1-0"),
    "santec10": FieldPacking("santec10", "R[7:4]=L[9:6] G[7:5]=L[5:3] B[7:5]=L[2:0]",
                             "Santec-style 10 bit over RGB: bits 9-6 red high nibble, 5-3 green top, 2-0 blue top"),
    "dmd24": BitPlanePacking("dmd24", "RGB", "DMD pattern mode: plane k = bit k % 8 of R, G, B (k // 8)"),
    "dmd24_ti": BitPlanePacking("dmd24_ti", "GRB", "DMD pattern mode, TI order: planes 0-7 G, 8-15 R, 16-23 B"),
}
#: Other names accepted for built-in packings.
ALIASES = {"gray": "gray8"}


def packing_choices() -> str:
    """One line naming every built-in packing with the panel bit depths it serves."""
    return ", ".join(f"{n!r} ({p.supported_depths()})" for n, p in PACKINGS.items()) + \
        ", or fields like 'R[7:0]=L[9:2] B[1:0]=L[1:0]'"


def get_packing(packing, bit_depth: int | None = None, who: str = "packing"):
    """The packing object for a name, an alias, a field spec or a packing object.

    Parameters
    ----------
    packing : a name of :data:`PACKINGS` (or an alias), a field spec string
        (``"R[7:0]=L[9:2] B[1:0]=L[1:0]"``), or a :class:`FieldPacking` /
        :class:`BitPlanePacking`.
    bit_depth : the panel's bit depth; a packing that cannot carry it raises ValueError.
    who : prefix of messages (the device name).
    """
    if isinstance(packing, (FieldPacking, BitPlanePacking)):
        pk = packing
    elif isinstance(packing, str):
        name = ALIASES.get(packing, packing)
        if name in PACKINGS:
            pk = PACKINGS[name]
        elif "=" in packing:
            try:
                pk = FieldPacking("custom", packing)
            except ValueError as exc:
                raise ValueError(f"{who}: {exc}") from None
        else:
            raise ValueError(f"{who}: packing must be one of {packing_choices()}; got {packing!r}")
    else:
        raise ValueError(f"{who}: packing must be one of {packing_choices()}; got {packing!r}")
    if bit_depth is not None and not pk.supports(bit_depth):
        fits = [n for n, p in PACKINGS.items() if p.supports(bit_depth)]
        raise ValueError(f"{who}: packing {pk.name!r} carries {pk.supported_depths()} levels, the panel has "
                         f"bit_depth={bit_depth}; use {' or '.join(map(repr, fits)) or 'a field spec'}")
    return pk


def pack(levels, packing, **kwargs) -> np.ndarray:
    """RGB frame (rows, cols, 3) uint8 of a level frame in ``packing`` (name, spec or object)."""
    return get_packing(packing).pack(levels, **kwargs)


def unpack(rgb, packing, **kwargs) -> np.ndarray:
    """Levels of an RGB frame in ``packing`` (name, spec or object); see ``FieldPacking.unpack``."""
    return get_packing(packing).unpack(rgb, **kwargs)
