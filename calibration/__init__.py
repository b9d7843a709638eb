"""Calibration: measure a bench through :mod:`hwio`, fit its imperfections, store them, deploy them.

Running it: :mod:`~calibration.run` (``calibrate_bench``: procedures in order, raw data,
resume), :mod:`~calibration.procedures` (the measurements on a bench), :mod:`~calibration.calset`
(the calibration file), :mod:`~calibration.quantities` (values with uncertainties, ``Fit``),
:mod:`~calibration.deploy` (fits -> encoders, ranges, readouts, exposures),
:mod:`~calibration.fingerprint` (which bench a file belongs to), :mod:`~calibration.lab_files`
(a lab's own measurement files), :mod:`~calibration.lo_region` (LO on a phase panel).
Fits (pure functions on arrays), by device: camera -- :mod:`~calibration.camera_fit`,
:mod:`~calibration.camera_pixel_fit`; registration -- :mod:`~calibration.spot_fit`,
:mod:`~calibration.registration_fit`;
readout -- :mod:`~calibration.readout_fit`; SLM -- :mod:`~calibration.slm_fit`,
:mod:`~calibration.slm_phase_fit`, :mod:`~calibration.slm_spline_fit`,
:mod:`~calibration.interference_fit`, :mod:`~calibration.crosstalk_fit`,
:mod:`~calibration.illumination_fit`; absorber -- :mod:`~calibration.absorber_fit`,
:mod:`~calibration.absorber_sweep_fit`, :mod:`~calibration.absorber_joint_fit`,
:mod:`~calibration.absorber_spot_fit`; MVMs -- :mod:`~calibration.mvm_fit`,
:mod:`~calibration.mvm_layers_fit`; shared -- :mod:`~calibration.lmfit_stderr`,
:mod:`~calibration.fit_statistics`, :mod:`~calibration.residual_tests` (model-free noise
estimate, runs test).
Report: :mod:`~calibration.report` (HTML page), :mod:`~calibration.report_plots`,
:mod:`~calibration.report_camera`.
"""
