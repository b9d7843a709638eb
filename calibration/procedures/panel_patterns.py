"""Bench states of one phase panel and its crosstalk test frames, for the SLM procedure.

:class:`Panel` sets the other devices while one panel is measured, picks the input amplitude
(and, when needed, a shorter exposure) at which its camera does not saturate, and reads the
homodyne spot fields.  :func:`crosstalk_patterns` builds the frames the crosstalk fit uses
(:mod:`calibration.procedures.slm` describes both).
"""
from __future__ import annotations

import math

import numpy as np

from calibration.procedures.context import CalContext
from calibration.procedures.exposure import input_fills, min_input
from hwio.encoding import BlazedEncoder
from hwio.response import PhaseResponse

__all__ = ["PANEL_CAMERAS", "Panel", "crosstalk_patterns"]

#: camera that sees each phase panel's elements first
PANEL_CAMERAS = {"slm1": "cam_z1", "slm2": "cam_out", "probe_input": "cam_back"}


class Panel:
    """Device states and measurements for one phase panel."""

    def __init__(self, ctx: CalContext, name: str, n_avg: int):
        self.ctx = ctx
        self.name = name
        self.cam = PANEL_CAMERAS[name]
        self.slm = ctx.bench.slms[name]
        self.layout = ctx.bench.layouts[name]
        self.n_avg = int(n_avg)
        self.x = 1.0
        if self.cam not in ctx.lo_cameras():
            raise ValueError(f"{name}: its camera {self.cam} has no LO channel; the SLM procedure needs homodyne "
                             f"readout there")
        ctx.need(f"readout.{self.cam}", "readout")

    def setup(self, x: float | None = None, inputs=None) -> None:
        ctx = self.ctx
        if x is not None:
            self.x = float(x)
        if inputs is None:
            xin = input_fills(ctx, self.x)
        else:       # chosen inputs: at least one DMD pixel each (never brighter than input_fills(x))
            xin = np.asarray(inputs, float) * max(self.x, 1.0 / ctx.dmd.n_active)
        ctx.show_inputs(xin)
        if self.name == "slm1":
            ctx.show("slm2", ctx.zero_levels("slm2"))
            ctx.show("probe_input", ctx.zero_levels("probe_input"))
        elif self.name == "slm2":
            ctx.show("slm1", ctx.uniform_levels("slm1", 0))
            ctx.show("probe_input", ctx.zero_levels("probe_input"))
        else:
            ctx.show("slm1", ctx.uniform_levels("slm1", 0))
            ctx.show("slm2", ctx.uniform_levels("slm2", 0))

    def fields(self, cams=None, powers: bool = False):
        cams = [self.cam] if cams is None else list(cams)
        return self.ctx.field_iq(cams, self.n_avg, return_powers=powers)

    def saturated(self) -> bool:
        return any(self.ctx.peak_adu.get(c, 0.0) >= self.ctx.saturation_adu(c) for c in self.ctx.peak_adu)

    def choose_input(self, max_halvings: int = 24, max_shortenings: int = 12) -> float:
        """Largest mean input fill (1, 1/2, ...) at which the uniform panel does not saturate.

        Below one DMD pixel per block fewer inputs are on
        (:func:`calibration.procedures.exposure.input_fills`); below a single pixel the
        camera's exposure is quartered instead (at most ``max_shortenings`` times;
        :func:`calibration.procedures.slm.measure_slm` restores it after the panel).
        """
        x = 1.0
        x_min = min_input(self.ctx)
        halvings = shortenings = 0
        while True:
            self.setup(x)
            self.ctx.show(self.name, self.ctx.uniform_levels(self.name, 0))
            self.ctx.peak_adu.clear()
            self.ctx.spot_powers([self.cam], (0.0, math.pi), 1)
            if not self.saturated():
                return x
            if halvings < max_halvings and 0.5 * x >= x_min * (1 - 1e-9):
                x *= 0.5
                halvings += 1
                continue
            t = float(self.ctx.bench.cameras[self.cam].exposure_s)
            if shortenings >= max_shortenings or self.ctx.set_exposure(self.cam, 0.25 * t) >= t:
                raise ValueError(f"{self.name}: {self.cam} saturates even at input amplitude {x:.3g} and exposure "
                                 f"{t:.3g} s; lower the laser power")
            shortenings += 1

    def exposure_factor(self) -> float:
        """The camera's exposure now over the one its readout fit (LO amplitudes, background) was measured at."""
        ro = self.ctx.fits.get(f"readout.{self.cam}")
        t_ro = ro.info.get("exposure_s") if ro is not None else None
        t = float(self.ctx.bench.cameras[self.cam].exposure_s)
        return t / float(t_ro) if t_ro else 1.0


def crosstalk_patterns(ctx: CalContext, panel: str, response: PhaseResponse):
    """Crosstalk test frames of one panel, written through the calibrated LUT.

    Parameters
    ----------
    ctx : calibration context (bench, encoders).
    panel : 'slm1', 'slm2' or 'probe_input'.
    response : the panel's fitted phase response.

    Returns
    -------
    (dict of pattern name -> level frame, uniform level frame at phase 0 rad).
    """
    enc = ctx.encoder(panel)
    if isinstance(enc, BlazedEncoder):
        return enc.crosstalk_patterns(response.inverse())
    slm = ctx.bench.slms[panel]
    lay = ctx.bench.layouts[panel]
    lut = response.inverse()
    l0 = int(lut(np.array([0.0]))[0])
    lpi = int(lut(np.array([math.pi]))[0])
    lhalf = int(lut(np.array([0.5 * math.pi]))[0])
    active = lay.element_map(slm.shape) >= 0
    rr, cc = np.indices(slm.shape)
    g = lay.guard_px
    lr = (rr - lay.origin_px[0] - g) % lay.pitch_px[0]
    lc = (cc - lay.origin_px[1] - g) % lay.pitch_px[1]
    dt = slm.level_dtype
    pats = {
        "frame_pi": np.where(active, l0, lpi),
        "checker_in": np.where(active & ((lr + lc) % 2 == 1), lpi, l0),
        "stripes4_in": np.where(active & ((lc // 2) % 2 == 1), lpi, l0),
        "frame_half_pi": np.where(active, l0, lhalf),
    }
    return {k: v.astype(dt) for k, v in pats.items()}, np.full(slm.shape, l0, dtype=dt)
