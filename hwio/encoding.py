"""Weights -> panel frames, and frames -> realised weights: the encoders in one place.

The encoders live in their own modules; this one gathers the names most code uses:

* :class:`PhaseEncoder` (:mod:`hwio.double_phase`): signed matrices -> double-phase
  (checkerboard) level frames of a phase-only panel (``slm1``, ``slm2``, ``probe_input``), read
  in the zero order; dithered between neighbouring levels by default (:mod:`hwio.dither`), with
  optional wavefront correction and panels whose phase range is short of 2 pi.
* :class:`BlazedEncoder` (:mod:`hwio.blazed`): the same matrices as blazed gratings read in the
  first diffraction order (bench file ``encoding = "blazed"``; ``docs/encodings.md``).
* :class:`DMDEncoder` (:mod:`hwio.dmd`): values in [0, 1] -> binary frames (fill fractions by
  ordered dithering) for the ``input`` DMD.
* :func:`realised_weights` and :func:`amplitude_transfer` (:mod:`hwio.transfer`): what a level
  frame realises on a panel (the twin's forward model), and the exact amplitude staircase an
  encoder realises, which calibrations store.

Shared argument checks and geometry are in :mod:`hwio.encoder_common`.
"""
from __future__ import annotations

from hwio.blazed import BlazedEncoder
from hwio.dmd import DMDEncoder
from hwio.double_phase import PhaseEncoder
from hwio.transfer import amplitude_transfer, realised_weights

__all__ = ["PhaseEncoder", "BlazedEncoder", "DMDEncoder", "realised_weights", "amplitude_transfer", "ENCODINGS"]

ENCODINGS = ("double_phase", "blazed")
"""Amplitude encodings of a phase panel: zero-order double-phase (default), first-order blazed grating."""
