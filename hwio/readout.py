"""Camera frames -> neuron readouts: spot powers through ROIs, signed fields by homodyne or bias.

A :class:`SpotReadout` is built once per camera from the spot centres (camera
pixels, row first) and a ROI size; it precomputes the flat pixel indices of every
ROI, the per-pixel weights (ROI mask divided by the gain) and the dark level summed
over each ROI, so reading a frame touches only ROI pixels:

    power_k = sum over ROI_k of (frame - dark) / gain_adu_per_e

(electrons when ``gain_adu_per_e`` is the camera's conversion gain K; ADU sums,
"relative units", with the default gain 1).

Signed values
-------------
Homodyne with LO phase steps 0 and pi (spot field E, LO field L, same mode)::

    P_0 - P_pi = 4 |L| Re(E)      ->   E = (P_0 - P_pi) / (4 |L|),   |L| = sqrt(P_LO)

where ``P_LO`` is the power of a frame with the signal blocked.  E comes out in
sqrt(power) units (sqrt(e-) with a gain), the same units as sqrt(P).

Known bias field B added coherently in phase with a real signal E (E > -B)::

    P = (E + B)^2   ->   E = sqrt(P) - B

(negative powers from noise are clipped to 0 first).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["SpotReadout"]


def _frame_array(frame) -> np.ndarray:
    """Array of one frame or a stack; accepts hwio.devices.CameraFrame objects and lists of them."""
    if isinstance(frame, (list, tuple)) and frame and hasattr(frame[0], "image"):
        return np.stack([np.asarray(f.image) for f in frame])
    return np.asarray(getattr(frame, "image", frame))


class SpotReadout:
    """Summed spot powers of camera frames through one ROI per spot.

    Parameters
    ----------
    centers_px : (n, 2) spot centres (row, col) in camera pixels (sub-pixel allowed).
    frame_shape : (rows, cols) of the camera frames.
    radius_px : circular ROI: pixels whose centre lies within this distance (pixels)
        of the spot centre.  Give this or ``box_px``.
    box_px : square ROI of this odd side length (pixels) around the nearest pixel.
    dark_adu : dark level, a scalar offset or a dark frame of ``frame_shape`` (ADU).
    gain_adu_per_e : conversion gain K (ADU per electron), scalar or per-pixel map;
        1 gives results in ADU ("relative units").
    saturation_adu : pixel value at or above which a ROI counts as saturated
        (default: none checked; use ``camera.max_adu``).
    name : camera name used in messages.

    Attributes
    ----------
    n_pixels : (n_spots,) pixels in each ROI.

    Raises
    ------
    ValueError
        On bad centres, an ROI outside the frame, or both/neither of ``radius_px`` and ``box_px``.
    """

    def __init__(self, centers_px, frame_shape, radius_px: float | None = None, box_px: int | None = None,
                 dark_adu=0.0, gain_adu_per_e=1.0, saturation_adu: float | None = None, name: str = "camera"):
        self.name = name
        c = np.asarray(centers_px, dtype=float)
        if c.ndim != 2 or c.shape[1] != 2 or c.shape[0] == 0:
            raise ValueError(f"{name}: centers_px must be an (n, 2) array of (row, col), got shape {c.shape}")
        if not np.all(np.isfinite(c)):
            raise ValueError(f"{name}: spot centres contain NaN/inf; check the registration")
        if len(frame_shape) != 2 or min(frame_shape) <= 0:
            raise ValueError(f"{name}: frame_shape must be (rows, cols) > 0, got {tuple(frame_shape)}")
        self.frame_shape = (int(frame_shape[0]), int(frame_shape[1]))
        self.centers_px = c
        if (radius_px is None) == (box_px is None):
            raise ValueError(f"{name}: give exactly one of radius_px (circular ROI) or box_px (square ROI)")
        if radius_px is not None:
            if not (math.isfinite(radius_px) and radius_px >= 0.5):
                raise ValueError(f"{name}: radius_px must be >= 0.5 pixel, got {radius_px}")
            half = int(math.ceil(radius_px)) + 1
        else:
            if int(box_px) != box_px or box_px < 1 or box_px % 2 == 0:
                raise ValueError(f"{name}: box_px must be an odd integer >= 1, got {box_px}")
            half = int(box_px) // 2
        self.radius_px = None if radius_px is None else float(radius_px)
        self.box_px = None if box_px is None else int(box_px)
        H, W = self.frame_shape
        centre_pix = np.rint(c).astype(np.int64)
        lo, hi = centre_pix - half, centre_pix + half
        bad = np.flatnonzero((lo[:, 0] < 0) | (lo[:, 1] < 0) | (hi[:, 0] >= H) | (hi[:, 1] >= W))
        if bad.size:
            k = int(bad[0])
            raise ValueError(f"{name}: ROI of spot {k} at ({c[k, 0]:.1f}, {c[k, 1]:.1f}) px extends outside the "
                             f"{H}x{W} frame ({bad.size} spot(s)); shrink the ROI or fix the registration")
        d = np.arange(-half, half + 1)
        rr = centre_pix[:, 0, None, None] + d[None, :, None]          # (n, b, 1)
        cc = centre_pix[:, 1, None, None] + d[None, None, :]          # (n, 1, b)
        if radius_px is not None:
            mask = (rr - c[:, 0, None, None]) ** 2 + (cc - c[:, 1, None, None]) ** 2 <= radius_px ** 2
        else:
            mask = np.ones(np.broadcast_shapes(rr.shape, cc.shape), dtype=bool)
        mask = np.broadcast_to(mask, (c.shape[0], d.size, d.size)).reshape(c.shape[0], -1)
        flat = (rr * W + cc).reshape(c.shape[0], -1)
        # keep only the columns some ROI uses (circular ROIs drop the box corners)
        used = mask.any(axis=0)
        self._index = np.ascontiguousarray(flat[:, used], dtype=np.intp)
        self._mask = np.ascontiguousarray(mask[:, used])
        self.n_pixels = self._mask.sum(axis=1)
        if np.any(self.n_pixels == 0):
            raise ValueError(f"{name}: some ROIs contain no pixel; increase radius_px")
        self.saturation_adu = None if saturation_adu is None else float(saturation_adu)
        self.set_calibration(dark_adu, gain_adu_per_e)

    @property
    def n_spots(self) -> int:
        """Number of spots (ROIs)."""
        return self.centers_px.shape[0]

    def set_calibration(self, dark_adu=0.0, gain_adu_per_e=1.0) -> None:
        """Set the dark level and the gain used by :meth:`power`.

        Parameters
        ----------
        dark_adu : dark level (ADU), a scalar or a frame of ``frame_shape``.
        gain_adu_per_e : conversion gain (ADU per electron), a scalar or a map of ``frame_shape``.
        """
        self._weights = self._per_pixel(gain_adu_per_e, "gain_adu_per_e")
        if np.any(~np.isfinite(self._weights)) or np.any(self._weights <= 0):
            raise ValueError(f"{self.name}: gain_adu_per_e must be finite and > 0 at every ROI pixel")
        self._weights = np.where(self._mask, 1.0 / self._weights, 0.0)
        dark = self._per_pixel(dark_adu, "dark_adu")
        if not np.all(np.isfinite(dark)):
            raise ValueError(f"{self.name}: dark_adu contains NaN/inf at ROI pixels; re-take the dark frame")
        self._dark_power = np.einsum("nm,nm->n", self._weights, dark)

    def _per_pixel(self, value, what: str) -> np.ndarray:
        v = np.asarray(value, dtype=float)
        if v.ndim == 0:
            return np.full(self._index.shape, float(v))
        if v.shape != self.frame_shape:
            raise ValueError(f"{self.name}: {what} must be a scalar or a {self.frame_shape} frame, got shape {v.shape}")
        return v.ravel()[self._index]

    # ------------------------------------------------------------------ hot path
    def _gather(self, frames) -> np.ndarray:
        arr = _frame_array(frames)
        if arr.size == 0:
            raise ValueError(f"{self.name}: empty frame (shape {arr.shape}); check the camera/acquisition")
        if arr.ndim not in (2, 3) or arr.shape[-2:] != self.frame_shape:
            raise ValueError(f"{self.name}: frame has shape {arr.shape}, expected {self.frame_shape} "
                             f"or (n_frames, {self.frame_shape[0]}, {self.frame_shape[1]})")
        if arr.dtype.kind not in "uif":
            raise TypeError(f"{self.name}: frame must be numeric, got dtype {arr.dtype}")
        flat = arr.reshape(arr.shape[:-2] + (-1,))
        vals = flat.take(self._index, axis=-1)                     # (..., n, m)
        if arr.dtype.kind == "f" and not np.isfinite(vals.sum()):
            bad = np.flatnonzero(~np.all(np.isfinite(vals.reshape(-1, *self._index.shape)), axis=(0, 2)))
            raise ValueError(f"{self.name}: frame contains NaN/inf in the ROI of spot(s) "
                             f"{bad[:10].tolist()}; discard the frame and grab again")
        if self.saturation_adu is not None:
            if vals.max() >= self.saturation_adu:
                hit = (vals >= self.saturation_adu) & self._mask
                if hit.any():
                    spots = np.flatnonzero(hit.reshape(-1, *self._index.shape).any(axis=(0, 2)))
                    raise ValueError(f"{self.name}: spot(s) {spots[:10].tolist()} saturated (pixels >= "
                                     f"{self.saturation_adu:g} ADU); reduce exposure or laser power")
        return vals

    def power(self, frames) -> np.ndarray:
        """Dark-subtracted, gain-corrected summed power of every spot.

        Parameters
        ----------
        frames : one frame (rows, cols), a stack (n_frames, rows, cols), a CameraFrame or a
            list of CameraFrames.

        Returns
        -------
        (n_spots,) or (n_frames, n_spots) float, in electrons (or ADU with gain 1).
        """
        vals = self._gather(frames)
        p = np.einsum("...nm,nm->...n", vals, self._weights, dtype=float, casting="unsafe")
        p -= self._dark_power
        return p

    def lo_amplitude(self, lo_frames) -> np.ndarray:
        """|LO| per spot: sqrt of the spot power of frame(s) with the signal blocked (averaged).

        Parameters
        ----------
        lo_frames : LO-only frame(s), as for :meth:`power`.

        Returns
        -------
        (n_spots,) float
            In sqrt(electrons) (sqrt(ADU) with gain 1).
        """
        p = self.power(lo_frames)
        p = p.mean(axis=0) if p.ndim == 2 else p
        bad = np.flatnonzero(~(p > 0))
        if bad.size:
            raise ValueError(f"{self.name}: LO power <= 0 after dark subtraction at spot(s) {bad[:10].tolist()}; "
                             f"check the LO path, the dark frame and that the LO frame is not dark")
        return np.sqrt(p)

    def homodyne(self, frame_0, frame_pi, lo_amplitude) -> np.ndarray:
        """Signed field ``E = (P_0 - P_pi) / (4 |LO|)`` from frames at LO phase 0 and pi.

        Parameters
        ----------
        frame_0, frame_pi : frame(s) at LO phase 0 and pi (stacks of equal length pair up).
        lo_amplitude : (n_spots,) |LO| per spot (:meth:`lo_amplitude`), sqrt(power) units.

        Returns
        -------
        (n_spots,) or (n_pairs, n_spots) float
            The field in sqrt(power) units (sqrt(e-), or sqrt(ADU) with gain 1).
        """
        lo = np.asarray(lo_amplitude, dtype=float)
        if lo.shape != (self.n_spots,):
            raise ValueError(f"{self.name}: lo_amplitude must have {self.n_spots} values, got shape {lo.shape}")
        if not np.all(lo > 0):
            raise ValueError(f"{self.name}: lo_amplitude must be > 0 for every spot; measure it with lo_amplitude()")
        p0, ppi = self.power(frame_0), self.power(frame_pi)
        if p0.shape != ppi.shape:
            raise ValueError(f"{self.name}: phase-0 and phase-pi frames differ in count: {p0.shape} vs {ppi.shape}")
        return (p0 - ppi) / (4.0 * lo)

    def bias_field(self, frames, bias_amplitude) -> np.ndarray:
        """Signed field ``E = sqrt(max(P, 0)) - B`` for a known in-phase bias field B.

        Valid while E > -B (the total field keeps the bias's sign).

        Parameters
        ----------
        frames : frame(s), as for :meth:`power`.
        bias_amplitude : B, a scalar or (n_spots,), in sqrt(power) units.

        Returns
        -------
        (n_spots,) or (n_frames, n_spots) float
            The field in sqrt(power) units.
        """
        b = np.asarray(bias_amplitude, dtype=float)
        if b.ndim not in (0, 1) or (b.ndim == 1 and b.shape != (self.n_spots,)) or not np.all(np.isfinite(b)):
            raise ValueError(f"{self.name}: bias_amplitude must be a finite scalar or {self.n_spots} values")
        p = self.power(frames)
        return np.sqrt(np.maximum(p, 0.0)) - b

    def __repr__(self):
        roi = f"radius_px={self.radius_px}" if self.radius_px is not None else f"box_px={self.box_px}"
        return f"SpotReadout(name={self.name!r}, n_spots={self.n_spots}, {roi}, frame_shape={self.frame_shape})"
