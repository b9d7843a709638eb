"""Absorber calibration on a bench: pump and probe sweeps through the hidden layer, then the fits.

Measurement (:func:`measure_absorber`)
--------------------------------------
``slm1`` shows a uniform frame at the level of phase 0 (every element at full positive
amplitude, no field lost to pixel crosstalk at block edges: the strongest pump the layer
can give) and the DMD puts the same fill fraction ``f`` on every input block; ``f`` runs
over whole-pixel counts from one pixel to the full block (geometric at the weak end, linear
over the upper two thirds where saturation shapes the curve), in a fixed shuffled order so
that slow drifts do not correlate with the pump, with the pump off first and last.  Each
hidden neuron ``k`` then sees ``z1_k ~ f sum_j G_kj``: the sweep reaches as far above
saturation as the optics allow (``info['saturation_reached']``, a warning below 10 x i_sat).
Before the sweep the exposures are lengthened as far as the brightest state allows
(:func:`boost_exposures`; homodyne values scale exactly with the exposure and are divided
back).  Below one DMD pixel per block the first pass goes on with one pixel on fewer and
fewer input blocks (those nearest the middle of the layout, down to a single pixel; a wide
input layer's summed field saturates the cell already at one pixel on every input), each
such weak step at its own, longer exposure.  At every step, LO phases 0 and pi, ``repeats``
frame pairs:

* ``cam_z1`` (field before the cell) and ``cam_a1`` (after it): ``P_in = h_z1^2``,
  ``P_out = h_a1^2`` per neuron (the mean's square minus its variance, so noise does not bias
  weak points); at the pump-off steps also LO phases pi/2 and 3 pi/2: the quadrature of
  ``z1`` (stray light), because the cell saturates on ``|z1|^2`` while homodyne reads the
  real part;
* ``cam_back`` with the probe off (pump leak, coherent or not) and on: a weak probe
  (``probe_input`` at ``probe_amplitude`` on every output, ``slm2`` at full amplitude) comes
  back through layer 2 and the cell; ``h_on - h_off`` is proportional to its amplitude
  transmission ``t(z1_k)``.  Each neuron's probe arrives with its own unknown amplitude:
  the curves are put on one scale model-free
  (:func:`calibration.absorber_spot_fit.neuron_scales`).

Rows are recorded step by step (streams ``absorber.*``, meta ``step``, ``fill`` (mean over
the inputs), ``inputs_on``, ``t_s`` = bench clock, exposure factors); a resumed run reuses the
recorded steps.

Fits
----
This module measures and records; the fits work on the recorded arrays:
:func:`calibration.absorber_sweep_fit.reduce_absorber` (homodyne repeats -> curves -> fit),
:mod:`calibration.absorber_joint_fit` (every neuron jointly, law selection, jackknifes) and
:mod:`calibration.absorber_spot_fit` (pooled and spot-averaged fits, ``scale_fit``).
Units: ``i_sat`` is in units of ``h_z1^2`` (the calibrated homodyne of ``cam_z1``), so the
twin field is ``z = h_z1 / sqrt(i_sat)``; ``background_transmission`` ``T_bg`` converts
``cam_a1``: ``a1 = h_a1 / sqrt(i_sat * T_bg)``, written as the contract's ``scale``
quantities ``z1_per_h`` and ``a1_per_h`` (the MVM calibration adds ``z2_per_h`` and
``delta1_per_h``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibration.absorber_joint_fit import law_margin
from calibration.absorber_spot_fit import scale_fit
from calibration.absorber_sweep_fit import reduce_absorber
from calibration.procedures.exposure import find_exposure, frame_peaks, kept_exposures
from calibration.procedures.steps import StepStore, homodyne_of, repeated_powers, saturated, step_progress

__all__ = ["AbsorberPlan", "absorber_plan", "boost_exposures", "full_pump_levels", "measure_absorber",
           "weak_inputs", "middle_inputs", "ABSORBER_PARTS", "WEAK_STEP0"]


@dataclass
class AbsorberPlan:
    """Settings of the absorber sweeps.

    counts : DMD pixels switched on per input block at each step (0 = pump off).
    n_active : active pixels per input block.
    repeats : frame pairs per step for cam_z1 and cam_a1.
    probe_repeats : frame pairs per step for cam_back, with the probe off and again with it on.
    probe_amplitude : probe_input amplitude fraction on every output (keep the probe weak).
    exposure_boost_max : longest exposure used for the sweeps, in operating exposures (see
        :func:`boost_exposures`; 1 keeps the operating exposures).
    max_passes, bic_margin : the sweep is repeated (all steps again, new rows) while the best
        law leads the next one by less than ``bic_margin`` in BIC, at most ``max_passes`` times.
    n_weak : weak-end steps of the first pass, at most: one DMD pixel on ``m`` input blocks,
        ``m`` geometric from 1 to n_in - 1 (meta ``inputs_on``; recorded as steps
        ``WEAK_STEP0 + j``).
    """

    counts: np.ndarray
    n_active: int
    repeats: int = 64
    probe_repeats: int = 32
    probe_amplitude: float = 0.15
    exposure_boost_max: float = 4.0
    max_passes: int = 3
    bic_margin: float = 10.0
    n_weak: int = 10

    @property
    def fills(self) -> np.ndarray:
        return np.asarray(self.counts, float) / self.n_active


def absorber_plan(bench, n_geometric: int = 10, n_linear: int = 24, repeats: int = 64, probe_repeats: int = 32,
                  probe_amplitude: float = 0.15) -> AbsorberPlan:
    """Pump steps: pump off, fills geometric from one pixel to full (weak end), linear over the
    upper two thirds (where saturation shapes the curve), pump off again.

    Parameters
    ----------
    bench : Bench
        The bench (its input layout gives the active DMD pixels per block).
    n_geometric, n_linear : int
        Steps of the geometric and the linear part (whole-pixel counts, duplicates merged).
    repeats, probe_repeats : int
        Frame pairs per step for cam_z1/cam_a1 and for cam_back (probe off and on each).
    probe_amplitude : float
        The probe's amplitude fraction on every output, in (0, 1].

    Returns
    -------
    AbsorberPlan
        Counts (DMD pixels per block, fixed shuffled order) and the settings.
    """
    lay = bench.layouts["input"]
    n_active = (lay.block_px[0] - 2 * lay.guard_px) * (lay.block_px[1] - 2 * lay.guard_px)
    geo = np.rint(np.geomspace(1, n_active, n_geometric))
    lin = np.rint(np.linspace(n_active / 3.0, n_active, n_linear))
    counts = np.unique(np.concatenate([geo, lin])).astype(int)
    # a fixed shuffle: slow drifts (laser power, cell temperature) do not correlate with the pump
    counts = np.random.default_rng(1288).permutation(counts)
    counts = np.concatenate([[0], counts, [0]])
    if not 0 < probe_amplitude <= 1:
        raise ValueError(f"probe_amplitude must be in (0, 1], got {probe_amplitude}")
    return AbsorberPlan(counts=counts, n_active=int(n_active), repeats=int(repeats),
                        probe_repeats=int(probe_repeats), probe_amplitude=float(probe_amplitude))


ABSORBER_PARTS = ("cam_z1", "cam_a1", "back_off", "back_on")
#: step index of the first weak-end step (after every pass's indices)
WEAK_STEP0 = 1_000_000


def weak_inputs(n_in: int, n_weak: int) -> list:
    """Numbers of input blocks (one DMD pixel each) of the weak-end steps: geometric, 1 to n_in - 1."""
    if n_in < 2 or n_weak < 1:
        return []
    return sorted({int(v) for v in np.rint(np.geomspace(1, n_in - 1, n_weak))})


def middle_inputs(n_in: int, m: int, fill: float) -> np.ndarray:
    """Fills (n_in,): ``fill`` on the ``m`` input blocks nearest the middle of the layout, 0 elsewhere."""
    order = np.argsort(np.abs(np.arange(n_in) - 0.5 * (n_in - 1)), kind="stable")
    out = np.zeros(n_in)
    out[order[:int(m)]] = fill
    return out


def boost_exposures(ctx, cams, probe_on, k_max: float = 4.0, fill_target: float = 0.7,
                    k_min: float = 1.0 / 1024.0, inputs=None) -> dict:
    """Set the exposures for the sweeps from the brightest state: as long as it allows, and
    shorter than the operating exposure when that would saturate.

    With the strongest pump (and the probe on for ``cam_back``) at LO phases 0 and pi, the
    brightest dark-subtracted pixel of each camera is scaled to ``fill_target`` of the room
    below saturation (ADC range above the dark level, or the camera fit's saturation
    capacity), between ``k_min`` and ``k_max`` times the operating exposure.  Shot noise falls
    as 1/sqrt(k); homodyne values grow by exactly ``k`` (photon counts; the background cancels
    in ``P0 - Ppi``), so dividing by the returned factor gives operating-exposure units.  A
    strong drive can saturate the spots at the operating exposure: the sweep then runs shorter
    (k < 1) rather than recording clipped pixels.  The range finding is
    :func:`calibration.procedures.exposure.find_exposure`, the one that chooses the operating
    exposures.

    ``inputs`` (n_in,) fills replace the strongest pump's (every input on) for a weaker state.

    Parameters
    ----------
    ctx : CalContext
        The bench context (``slm1``/``slm2`` already showing the sweep's pump frames).
    cams : sequence of str
        Cameras to set.
    probe_on : ndarray
        ``probe_input`` levels of the probe (shown while the exposures are found).
    k_max, k_min : float
        Longest and shortest exposure, in operating exposures.
    fill_target : float
        Fraction of the room below saturation the brightest pixel is set to.
    inputs : (n_in,) array_like, optional
        Input fills (DMD fill fractions) instead of every input full.

    Returns
    -------
    dict
        cam -> factor (exposure used / operating exposure, dimensionless).
    """
    bench = ctx.bench
    n_in = bench.sizes.n_in
    ctx.show_inputs(np.ones(n_in) if inputs is None else np.asarray(inputs, float))
    ctx.show("probe_input", probe_on)
    out = {}
    for cam in cams:
        nominal = float(bench.cameras[cam].exposure_s)
        t, _, _ = find_exposure(ctx, cam, lambda cam=cam: frame_peaks(ctx, [cam], (0.0, math.pi))[cam],
                                fill=fill_target, t_min=nominal * min(k_min, 1.0), t_max=nominal * max(k_max, 1.0),
                                max_iter=8)
        out[cam] = t / nominal
    ctx.show("probe_input", ctx.zero_levels("probe_input"))
    return out


def full_pump_levels(ctx, slm_name: str = "slm1") -> np.ndarray:
    """Every pixel of ``slm_name`` at the level of phase 0: all elements at full positive amplitude.

    A uniform panel loses no field to the pixel crosstalk at block edges (a double-phase
    frame at full amplitude does, into its zero-field surround), so this is the strongest
    pump the layer can deliver.
    """
    level = int(ctx.encoder(slm_name).lut(np.array([0.0]))[0])
    return ctx.uniform_levels(slm_name, level)


def measure_absorber(ctx, plan: AbsorberPlan | None = None, *, progress: bool = False,
                     spot_models: bool = True) -> list:
    """Pump and probe sweeps on a bench, then the fits: returns ``[absorber, scale]`` fits.

    Needs the registration, readout and SLM fits in ``ctx``.  Raw spot powers (LO phases 0
    and pi, operating-exposure units after dividing by the meta ``k_*`` exposure factors) go
    to the streams ``absorber.<cam_z1|cam_a1|back_off|back_on>`` (one row (repeats, 2,
    n_spots) per step, meta ``step``, ``fill`` (mean over the inputs), ``inputs_on`` (input
    blocks lit), ``t_s`` (bench clock), ``k_z1``, ``k_a1``, ``k_back``) and
    ``absorber.z1_quadrature`` (LO phases pi/2, 3 pi/2 at the pump-off steps).  Steps found in
    ``ctx.info['recorded']`` (a resumed run) are not measured again.  Camera exposures are
    restored afterwards.  The fits are :func:`calibration.absorber_sweep_fit.reduce_absorber`
    and :func:`calibration.absorber_spot_fit.scale_fit`.

    Parameters
    ----------
    ctx : CalContext
        The bench context with the prerequisite fits.
    plan : AbsorberPlan, optional
        Sweep settings (default :func:`absorber_plan` of the bench).
    progress : bool
        Show the steps in the progress display.
    spot_models : bool
        Also try the spot-averaged laws.

    Returns
    -------
    list of Fit
        ``[absorber, scale]``: the absorber law (``i_sat`` in ``h_z1^2`` units) and the
        homodyne-to-twin conversions ``z1_per_h``, ``a1_per_h`` (twin field per homodyne unit).
    """
    for cam in ("cam_z1", "cam_a1", "cam_back"):
        ctx.need(f"readout.{cam}", "readout")
    plan = plan or absorber_plan(ctx.bench)
    sweep = _AbsorberSweep(ctx, plan, progress)
    fit = None
    try:
        for n_pass in range(max(1, int(plan.max_passes))):
            sweep.pump_pass(n_pass)
            if n_pass == 0 and sweep.n_in > 1:
                # the weak end below one pixel per block: fewer inputs lit (a wide layer's summed
                # field saturates the cell already at one pixel on every input)
                sweep.weak_end()
            with ctx.timed("absorber.fit"):
                fit = reduce_absorber(sweep.homodyne(n_pass), np.asarray(sweep.counts),
                                      None if any(t is None for t in sweep.times) else sweep.times,
                                      probe_amplitude=plan.probe_amplitude, spot_models=spot_models,
                                      saturated=np.array(sweep.sat_flags, dtype=bool))
            fit.info["weak_end_inputs_on"] = [m for _, m in sweep.weak]
            fit.info["passes"] = n_pass + 1
            margin = law_margin(fit)
            fit.info["bic_margin"] = margin
            if not (margin < plan.bic_margin):
                break
            if n_pass + 1 < plan.max_passes:
                fit.info["warnings"].append(f"pass {n_pass + 1}: the best law leads by only {margin:.3g} in BIC; "
                                            "measured the sweep again")
    finally:
        sweep.restore()
    fit.info["raw_streams"] = [f"absorber.{p}" for p in ABSORBER_PARTS]
    fit.info["steps_reused"] = sweep.store.n_reused
    fit.info["steps_measured"] = sweep.store.n_measured
    fit.info["exposure_s"] = sweep.nominal
    fit.info["exposure_boost"] = {c: float(np.mean([f[c] for f in sweep.factors])) for c in _CAMS}
    scale = scale_fit(fit, ctx.fits.get("scale"))
    ctx.add(fit, scale)
    return [fit, scale]


_CAMS = ("cam_z1", "cam_a1", "cam_back")
_CAM_OF = {"cam_z1": "cam_z1", "cam_a1": "cam_a1", "back_off": "cam_back", "back_on": "cam_back"}


class _AbsorberSweep:
    """The bench side of :func:`measure_absorber`: steps measured (or reused), rows kept in order."""

    def __init__(self, ctx, plan: AbsorberPlan, progress: bool):
        bench = ctx.bench
        self.ctx, self.plan, self.progress = ctx, plan, progress
        self.n_in, self.n_h, self.n_out = bench.sizes
        self.store = StepStore(ctx, "absorber", ABSORBER_PARTS)
        self.qstore = StepStore(ctx, "absorber", ("z1_quadrature",))
        self.probe_on = ctx.weight_levels("probe_input", np.full((1, self.n_out), plan.probe_amplitude), 1.0)
        self.probe_off = ctx.zero_levels("probe_input")
        self.nominal = {c: float(bench.cameras[c].exposure_s) for c in _CAMS}
        self.gain = None                    # the sweep's exposure factors, once set
        self.rows, self.times, self.factors, self.counts, self.sat_flags = [], [], [], [], []
        self.n_steps = len(plan.counts)
        self.lo = {c: ctx.lo_amplitude(c) for c in _CAMS}
        self.weak = []                      # (step, m) of the weak-end steps, once they are added

    def measure(self, step: int, count: int, inputs, k: dict) -> dict:
        """One step: pump, probe off and on at the exposure factors ``k``; the stored rows."""
        ctx, plan, n_in = self.ctx, self.plan, self.n_in
        fill = float(count) / plan.n_active
        ctx.show_inputs(np.full(n_in, fill) if inputs is None else middle_inputs(n_in, inputs, fill))
        ctx.show("probe_input", self.probe_off)
        t_before = float(ctx.bench.timeline.now())
        pump_peak, back_peak = {}, {}
        p = repeated_powers(ctx, ("cam_z1", "cam_a1"), plan.repeats, pump_peak)
        t_mid = 0.5 * (t_before + float(ctx.bench.timeline.now()))
        p_off = repeated_powers(ctx, ("cam_back",), plan.probe_repeats, back_peak)
        ctx.show("probe_input", self.probe_on)
        p_on = repeated_powers(ctx, ("cam_back",), plan.probe_repeats, back_peak)
        ctx.show("probe_input", self.probe_off)
        if count == 0:      # the quadrature of z1 (stray light): the cell saturates on |z1|
            pq = [ctx.spot_powers(["cam_z1"], (0.5 * math.pi, 1.5 * math.pi), 1)["cam_z1"]
                  for _ in range(plan.repeats)]
            self.qstore.save(step, {"z1_quadrature": np.stack(pq)}, k_z1=k["cam_z1"])
        m = n_in if inputs is None else int(inputs)
        return self.store.save(step, {"cam_z1": p["cam_z1"], "cam_a1": p["cam_a1"],
                                      "back_off": p_off["cam_back"], "back_on": p_on["cam_back"]},
                               fill=fill * m / n_in, inputs_on=m, t_s=t_mid, k_z1=k["cam_z1"],
                               k_a1=k["cam_a1"], k_back=k["cam_back"], sat_pump=float(saturated(ctx, pump_peak)),
                               sat_back=float(saturated(ctx, back_peak)))

    def keep(self, step: int, count: int, got: dict) -> None:
        """Append a step's rows, saturation flags, time and exposure factors (recorded meta)."""
        store = self.store
        self.rows.append(got)
        self.sat_flags.append((bool(store.meta(step, "sat_pump")), bool(store.meta(step, "sat_back"))))
        self.counts.append(count)
        self.times.append(store.meta(step, "t_s"))
        self.factors.append({c: store.meta(step, key) or 1.0
                             for c, key in (("cam_z1", "k_z1"), ("cam_a1", "k_a1"), ("cam_back", "k_back"))})

    def _full_pump(self) -> None:
        ctx = self.ctx
        ctx.blank_all()
        ctx.show("slm1", full_pump_levels(ctx))
        ctx.show("slm2", ctx.weight_levels("slm2", np.ones((self.n_out, self.n_h)), 1.0))

    def pump_pass(self, n_pass: int) -> None:
        """Every step of the plan once (pass ``n_pass``), at the sweep's exposures."""
        plan, n_steps = self.plan, self.n_steps
        steps = [(n_pass * n_steps + i, int(c)) for i, c in enumerate(plan.counts)]
        desc = "absorber" if n_pass == 0 else f"absorber (pass {n_pass + 1})"
        for step, count in step_progress(steps, len(steps), desc, self.progress):
            got = self.store.get(step)
            if got is None:
                if self.gain is None:
                    self._full_pump()
                    self.gain = boost_exposures(self.ctx, _CAMS, self.probe_on, plan.exposure_boost_max)
                got = self.measure(step, count, None, self.gain)
            self.keep(step, count, got)

    def weak_end(self) -> None:
        """The weak-end steps, each at its own exposures (restored to the sweep's afterwards)."""
        ctx, n_in = self.ctx, self.n_in
        self.weak = [(WEAK_STEP0 + j, m) for j, m in enumerate(weak_inputs(n_in, self.plan.n_weak))]
        with kept_exposures(ctx, _CAMS):
            for step, m in step_progress(self.weak, len(self.weak), "absorber (weak end)", self.progress):
                got = self.store.get(step)
                if got is None:
                    self._full_pump()
                    for c in _CAMS:
                        ctx.set_exposure(c, self.nominal[c])
                    k = boost_exposures(ctx, _CAMS, self.probe_on, k_max=1024.0,
                                        inputs=middle_inputs(n_in, m, 1.0 / self.plan.n_active))
                    got = self.measure(step, 1, m, k)
                self.keep(step, 1, got)

    def homodyne(self, n_pass: int) -> dict:
        """Homodyne values of the rows kept so far, in the operating exposure's units (they scale
        with the exposure), and the pump-off quadratures of z1 of passes 0 to ``n_pass``."""
        lo = self.lo
        h = {part: [homodyne_of(r[part], lo[_CAM_OF[part]]) / f[_CAM_OF[part]]
                    for r, f in zip(self.rows, self.factors)]
             for part in ABSORBER_PARTS}
        quad = []
        for (step, count) in [(k * self.n_steps + i, int(c)) for k in range(n_pass + 1)
                              for i, c in enumerate(self.plan.counts)]:
            got = self.qstore.loaded.get(step, {}).get("z1_quadrature")
            if count == 0 and got is not None:
                quad.append(homodyne_of(got, lo["cam_z1"]) / (self.qstore.meta(step, "k_z1") or 1.0))
        h["z1_quadrature"] = quad
        return h

    def restore(self) -> None:
        """The operating exposures back; panels blank when the sweep showed anything."""
        ctx = self.ctx
        for c in _CAMS:
            if ctx.bench.cameras[c].exposure_s != self.nominal[c]:
                ctx.set_exposure(c, self.nominal[c])
        if self.gain is not None:
            ctx.blank_all()
