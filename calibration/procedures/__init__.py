"""Measurement procedures: drive a bench through :mod:`hwio` and return fits.

Every procedure is a function ``measure_xxx(ctx, ...) -> list[Fit]`` taking a
:class:`~calibration.procedures.context.CalContext`, which holds the bench, the optional
raw-data recorder and the fits made so far (later procedures use earlier fits: the
readout needs the registration, the SLM response needs the readout, ...).

Order on a bench: camera -> registration -> readout -> slm -> absorber -> mvm.
"""
from calibration.procedures.context import CalContext, REFERENCE_CAMERA, SLM_FIT_NAMES

__all__ = ["CalContext", "REFERENCE_CAMERA", "SLM_FIT_NAMES"]
