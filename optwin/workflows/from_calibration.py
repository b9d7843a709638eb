"""Build a calibrated twin and a bench System from a calibration file.

Names follow docs/dev/calibration-contract.md.  The twin gets every fitted
imperfection the file holds (absorber pump and probe laws, per-element gains,
stray fields, output crosstalk, shot-to-shot noise, backward-path gains); the bench
System gets the encoders' inverse LUTs, weight scales, ROIs, dark maps, LO amplitudes
and unit scales.  Parts missing from the file raise a one-line UsageError that says
which calibration step to run.
"""
from __future__ import annotations

import numpy as np

from calibration.calset import CalibrationFileError, CalibrationSet
from optwin.errors import UsageError

__all__ = ["load_calibration", "check_calibration_bench", "twin_from_calibration", "bench_system_from_calibration",
           "ideal_twin"]


def load_calibration(path) -> CalibrationSet:
    """The calibration file ``path`` (:class:`calibration.calset.CalibrationSet`).

    Parameters
    ----------
    path : a file written by ``optwin calibrate`` (or lab-file fits written with ``--out``).

    Returns
    -------
    CalibrationSet

    Raises
    ------
    UsageError
        When the file is missing, damaged or not a calibration file (one line).
    """
    try:
        return CalibrationSet.load(path)
    except CalibrationFileError as exc:
        raise UsageError(str(exc)) from None


def check_calibration_bench(cal: CalibrationSet, bench, path, allow_other: bool = False,
                            command: str = "optwin") -> list[str]:
    """Refuse (UsageError) a calibration file recorded on another bench; print and return warnings.

    Parameters
    ----------
    cal : the calibration.
    bench : the opened bench.
    path : the calibration file's name, for messages.
    allow_other : (``--allow-other-bench``) turn the refusal into a warning
        (:mod:`calibration.fingerprint`).
    command : the command named in the printed warnings.

    Returns
    -------
    list of str
        The warnings (also printed to stderr).
    """
    import sys

    from calibration.deploy import DeployError
    from calibration.fingerprint import check_bench
    try:
        warnings = check_bench(cal, bench, source=str(path), allow_other=allow_other)
    except DeployError as exc:
        raise UsageError(str(exc)) from None
    for w in warnings:
        print(f"{command}: warning: {w}", file=sys.stderr)
    return warnings


def _need(cal: CalibrationSet, name: str, step: str):
    if name not in cal.fits:
        raise UsageError(f"calibration file lacks '{name}'; run 'optwin calibrate --only {step}' first")
    return cal.fits[name]


def _array(fit, key, shape=None):
    if key not in fit.arrays:
        return None
    arr = np.asarray(fit.arrays[key], dtype=float)
    if shape is not None and arr.shape != tuple(shape):
        raise UsageError(f"calibration '{fit.name}.{key}' has shape {arr.shape}, the bench needs {tuple(shape)}")
    return arr


def twin_from_calibration(cal: CalibrationSet, sizes, rule: str = "probe", seed: int = 0, init_scale: float = 1.0,
                          slm_levels: int = 255):
    """The calibrated twin network (twin units: z^2 = I/I_sat at the cell).

    Weights are clipped to +-w_max of each layer (the largest amplitude the SLM realises) and
    realised through the panel's measured amplitude transfer table (``slm*.amplitude_transfer``:
    what the calibrated encoder really shows for each programmed amplitude); files without a
    table fall back to a uniform quantiser of ``slm_levels`` levels.

    Parameters
    ----------
    cal : the calibration (needs ``absorber``, ``mvm1`` and ``mvm2``).
    sizes : layer sizes (n_in, n_hidden, n_out).
    rule : backward rule at the cell: ``probe`` (the optical probe's transmission) or ``exact`` (g').
    seed : seeds the initial weights and the readout noise.
    init_scale : initial weights ~ N(0, s^2 / n_in) (twin units).
    slm_levels : quantiser levels without an amplitude transfer table.

    Returns
    -------
    twin.network.OpticalNetwork
    """
    from calibration.absorber_fit import absorber_from_fit
    from calibration.slm_fit import transfer_table
    from twin.layers import Imperfections
    from twin.network import OpticalNetwork

    absorber = absorber_from_fit(_need(cal, "absorber", "absorber"))
    sizes = [int(s) for s in sizes]
    imps = []
    for k, (name, slm_fit) in enumerate((("mvm1", "slm"), ("mvm2", "slm.slm2"))):
        fit = _need(cal, name, "mvm")
        n_in, n_out = sizes[k], sizes[k + 1]
        noise = _array(fit, "readout_noise")
        try:
            table = transfer_table(cal.fits.get(slm_fit))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        imp = Imperfections(gain=_array(fit, "gain", (n_out, n_in)), stray=_array(fit, "stray", (n_out,)),
                            levels=slm_levels if table is None else None, transfer=table,
                            w_max=float(fit.quantities["w_max"].value),
                            crosstalk=_array(fit, "crosstalk", (n_out, n_out)),
                            readout_noise=float(noise.ravel()[0]) if noise is not None else 0.0)
        if k == 1 and "mvm2_backward" in cal.fits:
            imp.backward_gain = _array(cal.fits["mvm2_backward"], "gain", (n_out, n_in))
        imps.append(imp)
    return OpticalNetwork(sizes, absorber=absorber, rule=rule, imperfections=imps, seed=seed,
                          init_scale=init_scale)


def ideal_twin(cal: CalibrationSet | None, sizes, alpha0: float | None = None, rule: str = "exact", seed: int = 0,
               init_scale: float = 1.0, weight_range: bool = True, absorber: str = "thin"):
    """A twin with perfect MVMs (no gain map, crosstalk, stray field, quantisation or noise).

    absorber : ``'thin'`` — the nominal thin-cell law with alpha0 from the file (if any): the
        *uncalibrated* twin a lab has before it measures its cell; ``'calibrated'`` — the
        cell law fitted in the file: the *ideal* reference, the same physical network on a
        perfect digital computer.
    weight_range : limit the weights to the +-w_max each SLM can realise (from the file's
        MVM fits, when present).

    Parameters
    ----------
    cal : the calibration, or None (nominal cell, no weight range).
    sizes : layer sizes (n_in, n_hidden, n_out).
    alpha0 : resonant optical depth of the nominal cell (default: the file's, else 5).
    rule : backward rule at the cell (``exact`` or ``probe``).
    seed : seeds the initial weights.
    init_scale : initial weights ~ N(0, s^2 / n_in) (twin units).
    weight_range, absorber : see above.

    Returns
    -------
    twin.network.OpticalNetwork
    """
    from twin.layers import Imperfections
    from twin.network import OpticalNetwork
    if absorber not in ("thin", "calibrated"):
        raise ValueError(f"absorber must be 'thin' or 'calibrated', got {absorber!r}")
    if alpha0 is None:
        alpha0 = cal.quantity("absorber.alpha0").value if cal is not None and "absorber" in cal.fits else 5.0
    law = "thin"
    if absorber == "calibrated":
        from calibration.absorber_fit import absorber_from_fit
        law = absorber_from_fit(_need(cal, "absorber", "absorber"))
    imps = None
    if weight_range and cal is not None and all(name in cal.fits for name in ("mvm1", "mvm2")):
        imps = [Imperfections(w_max=float(cal.fits[name].quantities["w_max"].value)) for name in ("mvm1", "mvm2")]
    return OpticalNetwork(sizes, absorber=law, alpha0=alpha0, rule=rule, seed=seed, init_scale=init_scale,
                          imperfections=imps)


def bench_system_from_calibration(bench, cal: CalibrationSet, probe_fraction: float = 0.5):
    """A :class:`hwio.bench_system.BenchSystem` reading and writing in twin units.

    Built by :func:`calibration.deploy.bench_calibration` (encoders, weight ranges, readouts,
    operating exposures: the same code ``optwin push`` and the calibration procedures use).

    Parameters
    ----------
    bench : the opened bench the calibration was made on.
    cal : its calibration.
    probe_fraction : peak backward-probe amplitude as a fraction of full amplitude.

    Returns
    -------
    hwio.bench_system.BenchSystem
    """
    from calibration.deploy import DeployError, bench_calibration
    from hwio.bench_system import BenchSystem
    try:
        return BenchSystem(bench, bench_calibration(cal.fits, bench, probe_fraction=probe_fraction))
    except DeployError as exc:
        raise UsageError(str(exc)) from None
