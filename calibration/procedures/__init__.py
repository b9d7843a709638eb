"""Measurement procedures: drive a bench through :mod:`hwio` and return fits.

Every procedure is a function ``measure_xxx(ctx, ...) -> list[Fit]`` taking a
:class:`~calibration.procedures.context.CalContext`, which holds the bench, the optional
raw-data recorder and the fits made so far (later procedures use earlier fits: the
readout needs the registration, the SLM response needs the readout, ...).

Order on a bench: camera -> registration -> readout -> slm -> absorber -> mvm; the slm part
ends by choosing the cameras' operating exposures.

Modules: :mod:`~calibration.procedures.context` (``CalContext``: device access, panel frames,
readout), :mod:`~calibration.procedures.camera`, :mod:`~calibration.procedures.exposure`,
:mod:`~calibration.procedures.dark_maps` (dark maps at the operating exposure),
:mod:`~calibration.procedures.panel_patterns`,
:mod:`~calibration.procedures.registration`, :mod:`~calibration.procedures.readout`,
:mod:`~calibration.procedures.slm`, :mod:`~calibration.procedures.absorber`,
:mod:`~calibration.procedures.mvm`, :mod:`~calibration.procedures.steps` (step-by-step
recording of the sweeps).  The fits they call live in ``calibration/*_fit.py``.
"""
from calibration.procedures.context import CalContext, REFERENCE_CAMERA, SLM_FIT_NAMES

__all__ = ["CalContext", "REFERENCE_CAMERA", "SLM_FIT_NAMES"]
