"""The bench as a training :class:`twin.system.System`: encode, show, grab, read out.

``BenchSystem.forward`` shows each input on the DMD (weights already on the SLMs), reads
the hidden layer before (``cam_z1``) and after (``cam_a1``) the cell and the output
(``cam_out``) by phase-stepped homodyne detection, and returns the values in the twin's
normalised units.  ``BenchSystem.backward`` re-establishes each sample's pump, injects the
output error as a weak probe through ``probe_input`` (scaled per sample so its peak is
``probe_fraction`` of full amplitude), reads the backward field after the cell on
``cam_back`` and forms the weight updates as outer products of measured vectors — the
paper's optical backpropagation.  The layer-1 input it reports is the fill fraction the
DMD realised (quantised to one pixel per block), not the requested value.  Everything
numeric comes from a :class:`BenchCalibration` (built from a calibration file by the
calibration layer).  Device calls follow :mod:`hwio.device_access` (retryable errors are
retried; a persistent one ends the call with a one-line error).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from hwio.device_access import DEFAULT_RETRIES, DeviceAccess
from hwio.encoding import DMDEncoder, PhaseEncoder
from hwio.response import InverseLUT
from twin.system import BackwardResult, ForwardResult

__all__ = ["BenchCalibration", "BenchSystem"]

FORWARD_CAMERAS = ("cam_z1", "cam_a1", "cam_out")


@dataclass
class BenchCalibration:
    """The numbers a bench system needs, in plain form.

    Parameters
    ----------
    luts : inverse phase response per phase panel ('slm1', 'slm2', 'probe_input').
    readouts : SpotReadout per camera (ROIs, dark, gain).
    lo_amplitudes : |LO| per spot per camera (readout power units).
    scales : twin units per homodyne unit per camera.
    w_max : twin weight realised by full SLM amplitude, per layer.
    probe_fraction : peak probe amplitude as a fraction of full amplitude (keeps it weak).
    info : free-form facts about the calibration (for reports).
    dither : per phase panel, whether its encoder dithers pixel pairs over neighbouring
        levels (:class:`hwio.encoding.PhaseEncoder`); must match what the calibration's
        amplitude transfer tables were computed for.  Missing panels: dithered (the default).
    encoders : optional ready :class:`hwio.encoding.PhaseEncoder` per phase panel (what
        ``calibration.deploy`` builds: LUT, dithering and wavefront map); used instead of
        building one from ``luts`` and ``dither``.
    """

    luts: dict
    readouts: dict
    lo_amplitudes: dict
    scales: dict
    w_max: list
    probe_fraction: float = 0.5
    info: dict = field(default_factory=dict)
    dither: dict = field(default_factory=dict)
    encoders: dict = field(default_factory=dict)


class BenchSystem:
    """Drive a bench (real or simulated) as a :class:`twin.system.System`.

    Parameters
    ----------
    bench : an opened :class:`hwio.bench.Bench` with panels ``input``, ``slm1``, ``slm2``,
        ``probe_input``, ``lo`` and cameras ``cam_z1``, ``cam_a1``, ``cam_out``, ``cam_back``.
    cal : its :class:`BenchCalibration`.
    retries : retries of a retryable device error (:class:`hwio.device_access.DeviceAccess`).

    Attributes
    ----------
    sizes : [n_in, n_hidden, n_out].
    access : the device-access policy.
    frames_grabbed : camera frames grabbed so far.
    """

    def __init__(self, bench, cal: BenchCalibration, retries: int = DEFAULT_RETRIES):
        self.bench = bench
        self.cal = cal
        self.access = DeviceAccess(retries=int(retries))
        sizes = bench.sizes
        self.sizes = [sizes.n_in, sizes.n_hidden, sizes.n_out]
        for name in ("slm1", "slm2", "probe_input"):
            if not isinstance(cal.luts.get(name), InverseLUT):
                raise ValueError(f"bench calibration lacks the inverse LUT of {name}; calibrate the SLMs")
        for cam in FORWARD_CAMERAS + ("cam_back",):
            if cam not in cal.readouts or cam not in cal.lo_amplitudes or cam not in cal.scales:
                raise ValueError(f"bench calibration lacks the readout of {cam}; run registration and readout")
        # encoders built by the calibration layer (calibration.deploy: LUT, dithering, wavefront
        # map) when given; else from the LUTs and dither flags
        self.encoders = {name: cal.encoders.get(name) or PhaseEncoder(
            bench.layouts[name], bench.slms[name].shape, cal.luts[name], name=name,
            dither=bool(cal.dither.get(name, True))) for name in ("slm1", "slm2", "probe_input")}
        self.dmd = DMDEncoder(bench.layouts["input"], bench.slms["input"].shape,
                              on_level=bench.slms["input"].max_level, name="input")
        lo = bench.slms["lo"]
        # LO phases 0 and pi: level 0 and, for an LO phase stepper (phase = 2 pi level / 2**bits),
        # level 2**(bits-1).  An LO that is a region of a phase panel (no stepper) follows the
        # panel's calibrated response: the level the LUT of a phase SLM on the same panel (slm1
        # first) gives for pi above level 0's phase.
        lo_panel = getattr(bench, "region_of", lambda name: None)("lo")
        pi_level = 2 ** (lo.bit_depth - 1)
        if lo_panel is not None:
            mate = next((s for s in ("slm1", "slm2", "probe_input") if s in bench.sharing("lo")), None)
            if mate is None:
                raise ValueError(f"lo is a region of {lo_panel!r}, which holds no phase SLM with a calibrated "
                                 f"LUT; put the LO region on the panel of slm1, slm2 or probe_input")
            lut = cal.luts[mate]
            pi_level = int(lut(lut.phase_min_rad + np.pi))
        self._lo_frames = {0: np.zeros(lo.shape, dtype=np.int64),
                           1: np.full(lo.shape, pi_level, dtype=np.int64)}
        self._weights = [np.zeros((self.sizes[1], self.sizes[0])), np.zeros((self.sizes[2], self.sizes[1]))]
        self._zero_probe = self.encoders["probe_input"].encode(np.zeros((1, self.sizes[2])), w_max=1.0)
        self._probe_on = True   # unknown state: blank it before the first forward
        self._last_x = None
        self._last_fw = None
        self.frames_grabbed = 0

    # -- device helpers ------------------------------------------------------
    def _show(self, name, levels):
        self.access.show(self.bench.slms[name], levels, name=name)

    def _grab(self, cam):
        self.frames_grabbed += 1
        return self.access.grab(self.bench.cameras[cam], name=cam).image

    def _homodyne(self, cams) -> dict:
        frames = {0: {}, 1: {}}
        for step in (0, 1):
            self._show("lo", self._lo_frames[step])
            for cam in cams:
                frames[step][cam] = self._grab(cam)
        return {cam: self.cal.readouts[cam].homodyne(frames[0][cam], frames[1][cam], self.cal.lo_amplitudes[cam])
                * self.cal.scales[cam] for cam in cams}

    def _show_input(self, x_row):
        self._show("input", self.dmd.encode(np.clip(x_row, 0.0, 1.0)[None, :]))

    def _blank_probe(self):
        if self._probe_on:
            self._show("probe_input", self._zero_probe)
            self._probe_on = False

    # -- System protocol -----------------------------------------------------
    def get_weights(self) -> list:
        """The weights shown, one (n_out, n_in) array per layer (twin units, within +-w_max)."""
        return self._weights

    def set_weights(self, weights) -> None:
        """Encode and show the weights on ``slm1`` and ``slm2``.

        Parameters
        ----------
        weights : one (n_out, n_in) array per layer in twin units; clipped to +-w_max of each
            layer (float64 arrays in place: the panel holds no more).
        """
        new = []
        for k, (w, name) in enumerate(zip(weights, ("slm1", "slm2"))):
            w = np.asarray(w, dtype=np.float64)
            if w.shape != self._weights[k].shape:
                raise ValueError(f"weights of layer {k} have shape {w.shape}, the bench needs {self._weights[k].shape}")
            wmax = float(self.cal.w_max[k])
            if isinstance(weights[k], np.ndarray) and weights[k].dtype == np.float64:
                np.clip(weights[k], -wmax, wmax, out=weights[k])   # project: the panel holds no more
                w = weights[k]
            else:
                w = np.clip(w, -wmax, wmax)
            self._show(name, self.encoders[name].encode(w, w_max=wmax))
            new.append(w)
        # keep the caller's arrays (optimizers update them in place; re-shown on the next set)
        self._weights = list(weights) if all(isinstance(w, np.ndarray) for w in weights) else new

    def forward(self, x: np.ndarray, rng=None) -> ForwardResult:
        """Measure the network's response to each input row.

        Parameters
        ----------
        x : (batch, n_in) input amplitude fractions in [0, 1] (clipped).
        rng : unused (the bench has its own noise).

        Returns
        -------
        ForwardResult
            ``pre = [z1, z2]``, ``post = [x realised by the DMD, a1]``, ``output = z2``, each
            (batch, n) in twin units.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.sizes[0]:
            raise ValueError(f"inputs must have shape (batch, {self.sizes[0]}), got {x.shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs contain NaN or inf")
        self._blank_probe()
        z1 = np.empty((len(x), self.sizes[1]))
        a1 = np.empty_like(z1)
        z2 = np.empty((len(x), self.sizes[2]))
        for b, row in enumerate(x):
            self._show_input(row)
            h = self._homodyne(FORWARD_CAMERAS)
            z1[b], a1[b], z2[b] = h["cam_z1"], h["cam_a1"], h["cam_out"]
        # the DMD realises each input as a fill fraction (quantised to 1 / pixels per block):
        # that, not the requested value, is the field that entered layer 1
        x = self.dmd.realised_values(x)
        self._last_x = x
        self._last_fw = ForwardResult(pre=[z1, z2], post=[x, a1], output=z2)
        return self._last_fw

    def backward(self, output_error: np.ndarray) -> BackwardResult:
        """Optical backpropagation of ``output_error`` for the last :meth:`forward` batch.

        Parameters
        ----------
        output_error : (batch, n_out) error at the outputs (twin units).

        Returns
        -------
        BackwardResult
            ``errors = [d1 measured after the cell, d2]`` and ``grads`` (outer products of
            measured vectors, one (n_out, n_in) array per layer).
        """
        if self._last_fw is None:
            raise RuntimeError("backward() needs a forward() first")
        d2 = np.asarray(output_error, dtype=np.float64)
        if d2.shape != self._last_fw.output.shape:
            raise ValueError(f"output error has shape {d2.shape}, expected {self._last_fw.output.shape}")
        d1 = np.zeros((len(d2), self.sizes[1]))
        for b, (row, err) in enumerate(zip(self._last_x, d2)):
            peak = float(np.abs(err).max())
            if peak == 0:
                continue
            scale = self.cal.probe_fraction / peak
            self._show_input(row)                        # the pump of this sample
            self._show("probe_input", self.encoders["probe_input"].encode((err * scale)[None, :], w_max=1.0))
            self._probe_on = True
            d1[b] = self._homodyne(("cam_back",))["cam_back"] / scale
        self._blank_probe()
        grads = [d1.T @ self._last_x, d2.T @ self._last_fw.post[1]]
        return BackwardResult(errors=[d1, d2], grads=grads)
