"""Matrix-vector multiplier calibration: MVM-1 forward, MVM-2 forward, MVM-2 backward.

Model (twin units, :class:`twin.layers.OpticalLinear`)::

    forward:   y = C (G * W) x + s                      C: output crosstalk, diag(C) = 1
    backward:  d1 = t(z1) * ((Gb * W2)^T Cb^T d2) + sb   (the probe retraces layer 2)

``W`` is the programmed matrix in twin units; the encoder shows the amplitude fraction
``A = W / w_max`` on the SLM, so at full amplitude an element realises ``G_ij * w_max``.
The fits use what the devices realise: ``T(A)`` from the SLM fit's amplitude transfer
table (:func:`calibration.slm_fit.transfer_table`: LUT rounding and response residuals,
scaled to +-1 at full amplitude) and the DMD's fill fractions for ``x``; the twin applies
the same table (``twin.layers.Imperfections.transfer``).

Probes (:func:`measure_mvm`), each repeated ``repeats`` times (LO phases 0 and pi):

* stray: every weight zero (the output is the stray field ``s``);
* one-hot: elements at full amplitude with their input on, one per output spot (layer 1:
  ``x = e_j`` and column ``j`` on every 7th row; layer 2: only hidden neuron ``j`` pumped and
  column ``j`` on every 7th row; backward: a whole row of slm2 with the probe on one output at
  a time; :func:`mvm_plans`), which gives ``G`` and ``C`` directly;
* random: random signed amplitudes and random inputs; half of them refine the fit, the
  other half (held out) give the errors.

Inputs and outputs in twin units: layer 1 input = DMD fill fraction (exact), output
``z1 = z1_per_h h_z1``; layer 2 input ``a1 = a1_per_h h_a1`` (measured at the same time),
output ``h_out``; backward input = probe amplitude fraction ``d2`` (``w_max`` of the probe
panel is 1, as :class:`hwio.bench_system.BenchSystem` drives it), output ``h_back`` with
the cell pumped by every hidden neuron at full amplitude (every input on; a wide input layer
at the weaker input the exposure step chose, ``exposure.backward_pump_fill``); ``t(z1)`` from
the absorber fit's probe law at the measured ``z1``.

This module measures and records; the fits (model, conventions that fix the free scales,
held-out errors) are :mod:`calibration.mvm_fit` and :mod:`calibration.mvm_layers_fit`.
"""
from __future__ import annotations

import math

import numpy as np

from calibration.absorber_fit import absorber_from_fit
from calibration.mvm_layers_fit import fit_backward, fit_forward, fit_mvm2_forward, scale_with_mvm
from calibration.procedures.absorber import boost_exposures, full_pump_levels
from calibration.procedures.exposure import (backward_pump_fill, find_exposure, frame_peaks, input_fills,
                                             kept_exposures, saturation_room)
from calibration.procedures.steps import StepStore, homodyne_of, repeated_powers, saturated, step_progress

__all__ = ["mvm_plans", "measure_mvm", "MVM_NAMES", "ONEHOT_SPACING"]

MVM_NAMES = ("mvm1", "mvm2", "mvm2_backward")


_KIND_CODE = {"stray": 0, "onehot": 1, "fit": 2, "test": 3}


def _random_groups(rng, n_groups, per_group, amp_shape, x_shape, x_lo, x_hi):
    out = []
    for g in range(n_groups):
        a = rng.uniform(-1.0, 1.0, amp_shape)
        kind = "fit" if g % 2 == 0 else "test"
        for _ in range(per_group):
            out.append((kind, a, rng.uniform(x_lo, x_hi, x_shape)))
    return out


#: rows lit together in a one-hot step of a forward layer are this far apart: twice the widest
#: finite crosstalk band the fit considers (3) plus one, so every unlit output within that band
#: of a lit one sees a single lit element
ONEHOT_SPACING = 7


def _row_classes(n: int, spacing: int = ONEHOT_SPACING) -> list:
    m = max(1, min(int(spacing), int(n)))
    return [np.arange(c, n, m) for c in range(m)]


def mvm_plans(sizes, seed: int = 2308, n_groups: int = 8, per_group: int = 5, probe_amplitude: float = 1.0,
              spacing: int = ONEHOT_SPACING) -> dict:
    """Deterministic probe settings of the three MVMs (same seed -> same plan, so a resumed run
    measures exactly the settings that are missing).

    One-hot steps light one element per output spot, several spots at once: forward layers light
    column ``j`` of the panel (layer 1: input ``j`` alone; layer 2: hidden neuron ``j`` alone
    pumped) on every ``spacing``-th row (outputs ``spacing`` apart: each unlit output within the
    crosstalk band of a lit one sees one lit element); the backward path lights a whole row
    ``i`` of slm2 with the probe on one output ``m`` (every element reaches its own hidden
    spot, the probe crosstalk acts before the panel), so every element is measured with every probe.

    Returns dict name -> list of settings; each setting a dict with ``kind`` ('stray',
    'onehot', 'fit', 'test') and the frames' contents:
    mvm1: ``A1`` (n_h, n_in) amplitude fractions, ``x`` (n_in,) fills;
    mvm2: ``A1``, ``x`` (the pump), ``A2`` (n_out, n_h);
    mvm2_backward: ``A2``, ``u`` (n_out,) probe amplitude fractions (pump: every element full).
    """
    n_in, n_h, n_out = (int(s) for s in sizes)
    rng = np.random.default_rng(seed)
    p1 = [{"kind": "stray", "A1": np.zeros((n_h, n_in)), "x": np.zeros(n_in)}]
    for j in range(n_in):
        for rows in _row_classes(n_h, spacing):
            a = np.zeros((n_h, n_in))
            a[rows, j] = 1.0
            p1.append({"kind": "onehot", "A1": a, "x": np.eye(n_in)[j]})
    for kind, a, x in _random_groups(rng, n_groups, per_group, (n_h, n_in), n_in, 0.0, 1.0):
        p1.append({"kind": kind, "A1": a, "x": x})
    ones_pump = np.ones((n_h, n_in))
    p2 = [{"kind": "stray", "A1": ones_pump, "x": np.ones(n_in), "A2": np.zeros((n_out, n_h))}]
    for k in range(n_h):
        pump = np.zeros((n_h, n_in))
        pump[k] = 1.0
        for rows in _row_classes(n_out, spacing):
            a2 = np.zeros((n_out, n_h))
            a2[rows, k] = 1.0
            p2.append({"kind": "onehot", "A1": pump, "x": np.ones(n_in), "A2": a2})
    for g in range(n_groups):
        a2 = rng.uniform(-1.0, 1.0, (n_out, n_h))
        kind = "fit" if g % 2 == 0 else "test"
        for _ in range(per_group):
            p2.append({"kind": kind, "A1": rng.uniform(-1.0, 1.0, (n_h, n_in)), "x": rng.uniform(0.0, 1.0, n_in),
                       "A2": a2})
    pb = [{"kind": "stray", "A2": np.ones((n_out, n_h)), "u": np.zeros(n_out)}]
    for i in range(n_out):
        a2 = np.zeros((n_out, n_h))
        a2[i, :] = 1.0
        for m in range(n_out):
            pb.append({"kind": "onehot", "A2": a2, "u": probe_amplitude * np.eye(n_out)[m]})
    for kind, a2, u in _random_groups(rng, n_groups, per_group, (n_out, n_h), n_out, -probe_amplitude,
                                      probe_amplitude):
        pb.append({"kind": kind, "A2": a2, "u": u})
    return {"mvm1": p1, "mvm2": p2, "mvm2_backward": pb}


class _Panels:
    """Show frames only when they change (SLM settle times are the slow part of a real bench)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.last = {}

    def weights(self, name, amps):
        amps = np.asarray(amps, float)
        key = amps.tobytes()
        if self.last.get(name) != key:
            self.ctx.show(name, self.ctx.weight_levels(name, amps, 1.0))
            self.last[name] = key

    def frame(self, name, levels, key):
        if self.last.get(name) != key:
            self.ctx.show(name, levels)
            self.last[name] = key

    def inputs(self, x):
        x = np.asarray(x, float)
        key = x.tobytes()
        if self.last.get("input") != key:
            self.ctx.show_inputs(x)
            self.last["input"] = key


def _measure(ctx, name, plan, cams, repeats, setup, progress, fill: float = 0.7, dim=None, max_dim: int = 16):
    """Measure every step of ``plan``; returns (rows, store, keep).

    A step that clips a camera at the operating exposure (single elements at full pump are far
    brighter than the probes the exposure was chosen for) is measured again at a shorter
    exposure of that camera (:func:`calibration.procedures.exposure.find_exposure`: the
    brightest pixel at ``fill`` of the room); the factor (exposure used / operating one) is
    recorded with the step (meta ``k_<cam>``) and the powers in ``rows`` are divided by it
    (operating-exposure units: the camera is linear).  When even the shortest exposure clips
    and ``dim(step, level)`` is given (a step whose inputs the fit measures, so a weaker drive
    changes nothing but the light), the step is shown dimmer (``level`` halvings of its input,
    meta ``dim_level``) and measured again.  The next step of the same kind starts at the
    dimming and factors this one needed.  ``keep`` is False for steps that clipped even so
    (the step leaves the fit).
    """
    store = StepStore(ctx, name, cams)
    nominal = {c: float(ctx.bench.cameras[c].exposure_s) for c in cams}
    start = {}                          # (kind, cam) -> exposure factor to start the next step at
    start_dim = {}                      # kind -> dimming level to start the next step at
    rows, keep = [], []

    def attempt(st, level):
        if level:
            dim(st, level)
        for c in cams:
            ctx.set_exposure(c, nominal[c] * start.get((st["kind"], c), 1.0))
        peaks = {}
        p = repeated_powers(ctx, cams, repeats, peaks)
        clipped = [c for c in cams if peaks[c] >= ctx.saturation_adu(c)]
        if clipped:
            for c in clipped:
                find_exposure(ctx, c, lambda c=c: frame_peaks(ctx, [c], (0.0, math.pi))[c], fill=fill,
                              t_max=nominal[c])
            peaks = {}
            p = repeated_powers(ctx, cams, repeats, peaks)
        return p, peaks

    for idx, st in step_progress(list(enumerate(plan)), len(plan), name, progress):
        got = store.get(idx)
        if got is None:
            setup(st)
            level = start_dim.get(st["kind"], 0) if dim is not None else 0
            with kept_exposures(ctx, cams):
                p, peaks = attempt(st, level)
                while dim is not None and saturated(ctx, peaks) and level < max_dim:
                    level += 1
                    p, peaks = attempt(st, level)
                k = {c: float(ctx.bench.cameras[c].exposure_s) / nominal[c] for c in cams}
            start_dim[st["kind"]] = level
            for c in cams:              # would this step clip at the operating exposure? then so will the next
                room, dark = saturation_room(ctx, c)
                at_one = (peaks[c] - dark) / k[c]
                start[(st["kind"], c)] = min(1.0, fill * room / at_one) if at_one >= 0.9 * room else 1.0
            got = store.save(idx, p, kind=_KIND_CODE[st["kind"]], sat=float(saturated(ctx, peaks)),
                             dim_level=level, **{f"k_{c}": k[c] for c in cams})
        factor = {c: store.meta(idx, f"k_{c}") or 1.0 for c in cams}
        rows.append({c: np.asarray(got[c]) / factor[c] for c in cams})
        keep.append(not store.meta(idx, "sat"))
    return rows, store, np.array(keep, dtype=bool)


def _unsaturated(plan, rows, keep, fit_name: str, notes: list):
    """The steps of ``plan``/``rows`` that did not saturate a camera (a note when some did)."""
    if keep.all():
        return plan, rows
    if keep.sum() < 0.5 * keep.size:
        raise ValueError(f"{fit_name}: {int((~keep).sum())} of {keep.size} steps saturated a camera even at its "
                         f"shortest exposure; lower the laser power and calibrate again")
    notes.append(f"{fit_name}: {int((~keep).sum())} of {keep.size} steps saturated a camera even at its shortest "
                 f"exposure and were left out; lower the laser power")
    return [st for st, k in zip(plan, keep) if k], [r for r, k in zip(rows, keep) if k]


def measure_mvm(ctx, *, repeats: int = 8, backward_repeats: int = 16, pump_repeats: int = 32, seed: int = 2308,
                n_groups: int = 8, per_group: int = 5, progress: bool = False) -> list:
    """Probe MVM-1, MVM-2 and MVM-2 backward and fit them (see the module docs).

    Needs the readout, SLM and absorber fits (``absorber`` and ``scale`` with ``z1_per_h``,
    ``a1_per_h``) in ``ctx``.  Raw spot powers go to the streams ``mvm1.cam_z1``,
    ``mvm2.cam_a1``, ``mvm2.cam_out``, ``mvm2_backward.cam_back`` and ``mvm2_backward.pump``.
    The fits are :mod:`calibration.mvm_layers_fit`'s.

    Parameters
    ----------
    ctx : CalContext
        The bench context with the prerequisite fits.
    repeats : int
        Frame pairs (LO phases 0 and pi) per forward step.
    backward_repeats : int
        Frame pairs per backward step.
    pump_repeats : int
        Frame pairs of the backward pump's z1, before and after the backward steps.
    seed : int
        Seed of the random probes (:func:`mvm_plans`).
    n_groups, per_group : int
        Random probe groups (alternately fitted and held out) and probes per group.
    progress : bool
        Show the steps in the progress display.

    Returns
    -------
    list of Fit
        ``[mvm1, mvm2, mvm2_backward, scale]``: gains (relative to ``w_max``, twin weight),
        crosstalk and stray field (twin field units) of each MVM, and the scale fit with
        ``z2_per_h`` and ``delta1_per_h`` (twin field per homodyne unit) added.
    """
    for cam in _MVM_CAMS:
        ctx.need(f"readout.{cam}", "readout")
    absorber = ctx.need("absorber", "absorber")
    scale = ctx.need("scale", "absorber")
    run = _MvmRun(ctx, mvm_plans(tuple(ctx.bench.sizes), seed, n_groups, per_group), progress)
    fit1, store1, keep1 = run.mvm1(repeats, scale.quantities["z1_per_h"])
    fit2, store2, keep2, z2_per_h = run.mvm2(repeats, scale.quantities["a1_per_h"])
    fitb, storeb, keepb, delta1_per_h, pump_info = run.backward(backward_repeats, pump_repeats,
                                                                scale.quantities["z1_per_h"], absorber, fit2)
    ctx.blank_all()
    new_scale = scale_with_mvm(scale, z2_per_h, delta1_per_h)
    for f, st, keep in ((fit1, store1, keep1), (fit2, store2, keep2), (fitb, storeb, keepb)):
        f.info["steps_reused"] = st.n_reused
        f.info["steps_measured"] = st.n_measured
        f.info["steps_saturated"] = int((~keep).sum())
        mine = [n for n in run.notes if n.startswith(f.name + ":")]
        if mine:
            f.info["warnings"] = list(f.info.get("warnings", [])) + mine
    fitb.info.update(pump_info)
    ctx.add(fit1, fit2, fitb, new_scale)
    return [fit1, fit2, fitb, new_scale]


_MVM_CAMS = ("cam_z1", "cam_a1", "cam_out", "cam_back")


class _MvmRun:
    """The bench side of :func:`measure_mvm`: the three MVMs' steps, measured (or reused) in turn."""

    def __init__(self, ctx, plans: dict, progress: bool):
        self.ctx, self.plans, self.progress = ctx, plans, progress
        self.lo = {c: ctx.lo_amplitude(c) for c in _MVM_CAMS}
        self.panels = _Panels(ctx)
        self.notes = []
        ctx.blank_all()
        self.panels.frame("probe_input", ctx.zero_levels("probe_input"), "zero")

    def _homodyne(self, rows, cam):
        """(S, R, n_spots) homodyne values of ``cam`` in the rows of every step."""
        return np.stack([homodyne_of(r[cam], self.lo[cam]) for r in rows])

    def mvm1(self, repeats: int, z1_per_h):
        """MVM-1 forward: measured, then fitted against what the devices realised (the panels'
        transfer tables, the DMD's fill fractions); returns (fit, store, keep)."""
        ctx, plans, panels = self.ctx, self.plans, self.panels

        def setup1(st):
            panels.weights("slm1", st["A1"])
            panels.inputs(st["x"])
        with ctx.timed("mvm.measure_mvm1"):
            rows1, store1, keep1 = _measure(ctx, "mvm1", plans["mvm1"], ("cam_z1",), repeats, setup1, self.progress)
        plans["mvm1"], rows1 = _unsaturated(plans["mvm1"], rows1, keep1, "mvm1", self.notes)
        z1 = self._homodyne(rows1, "cam_z1") * z1_per_h.value                     # (S, R, n_h)
        _add_realised(ctx, plans)
        with ctx.timed("mvm.fit_mvm1"):
            fit1 = fit_forward("mvm1", plans["mvm1"], "A1_real", "x_real", z1, None)
        return fit1, store1, keep1

    def mvm2(self, repeats: int, a1_per_h):
        """MVM-2 forward, its input a1 measured at the same time; returns (fit, store, keep, z2_per_h)."""
        ctx, plans, panels = self.ctx, self.plans, self.panels

        def setup2(st):
            panels.weights("slm1", st["A1"])
            panels.inputs(st["x"])
            panels.weights("slm2", st["A2"])

        def dim2(st, level):
            """The MVM-2 input a1 is measured, so a clipping step may run at a weaker pump: its input
            fills halved ``level`` times (a uniform pump below one pixel per block on fewer inputs)."""
            x = np.asarray(st["x"], float)
            scale = 0.5 ** int(level)
            panels.inputs(input_fills(ctx, float(x[0]) * scale) if np.ptp(x) == 0 else x * scale)
        with ctx.timed("mvm.measure_mvm2"):
            rows2, store2, keep2 = _measure(ctx, "mvm2", plans["mvm2"], ("cam_a1", "cam_out"), repeats, setup2,
                                            self.progress, dim=dim2)
        plans["mvm2"], rows2 = _unsaturated(plans["mvm2"], rows2, keep2, "mvm2", self.notes)
        a1 = self._homodyne(rows2, "cam_a1") * a1_per_h.value                     # (S, R, n_h)
        hout = self._homodyne(rows2, "cam_out")                                   # (S, R, n_out)
        with ctx.timed("mvm.fit_mvm2"):
            fit2, z2_per_h = fit_mvm2_forward(plans["mvm2"], hout, a1.mean(axis=1), a1_per_h)
        return fit2, store2, keep2, z2_per_h

    def backward(self, repeats: int, pump_repeats: int, z1_per_h, absorber, fit2):
        """MVM-2 backward with the cell pumped, the pump's z1 measured before and after; returns
        (fit, store, keep, delta1_per_h, info on the pump: its z1 in twin units, the cell's t)."""
        ctx, plans, panels = self.ctx, self.plans, self.panels
        pump = _BackwardPump(ctx, panels, self.lo["cam_z1"], pump_repeats, self.notes)
        zp_start = pump.z1(0)

        def setupb(st):
            pump.show()
            panels.weights("slm2", st["A2"])
            u = np.asarray(st["u"], float)
            panels.frame("probe_input", ctx.weight_levels("probe_input", u[None, :], 1.0), ("u", u.tobytes()))
        with ctx.timed("mvm.measure_mvm2_backward"):
            rowsb, storeb, keepb = _measure(ctx, "mvm2_backward", plans["mvm2_backward"], ("cam_back",), repeats,
                                            setupb, self.progress)
        plans["mvm2_backward"], rowsb = _unsaturated(plans["mvm2_backward"], rowsb, keepb, "mvm2_backward",
                                                     self.notes)
        zp_end = pump.z1(1)
        zp = np.concatenate([zp_start, zp_end]) * z1_per_h.value            # (2 R, n_h)
        t = absorber_from_fit(absorber).probe(zp.mean(axis=0))               # (n_h,)
        hb = self._homodyne(rowsb, "cam_back")                               # (S, R, n_h)
        with ctx.timed("mvm.fit_mvm2_backward"):
            fitb, delta1_per_h = fit_backward(plans["mvm2_backward"], hb, t, fit2)
        return fitb, storeb, keepb, delta1_per_h, {"pump_z1_twin": zp.mean(axis=0).tolist(), "probe_t": t.tolist()}


class _BackwardPump:
    """The backward steps' pump (every hidden neuron at full amplitude) and its recorded z1."""

    def __init__(self, ctx, panels, lo_z1, repeats: int, notes: list):
        self.ctx, self.panels, self.lo_z1, self.repeats, self.notes = ctx, panels, lo_z1, repeats, notes
        self.store = StepStore(ctx, "mvm2_backward", ("pump",))
        self.levels = full_pump_levels(ctx)
        self.inputs = input_fills(ctx, backward_pump_fill(ctx))

    def show(self) -> None:
        """The pump on slm1 and the input DMD."""
        self.panels.frame("slm1", self.levels, "full")
        self.panels.inputs(self.inputs)

    def z1(self, step: int) -> np.ndarray:
        """z1 homodyne of the pump (operating-exposure units); measured at a shorter exposure when
        the operating one would clip the brightest spots."""
        ctx, pstore = self.ctx, self.store
        got = pstore.get(step)
        if got is None:
            self.show()
            self.panels.frame("probe_input", ctx.zero_levels("probe_input"), "zero")
            nominal = float(ctx.bench.cameras["cam_z1"].exposure_s)
            try:
                k = boost_exposures(ctx, ("cam_z1",), ctx.zero_levels("probe_input"), k_max=1.0,
                                    inputs=self.inputs)["cam_z1"]
                peaks = {}
                got = pstore.save(step, {"pump": repeated_powers(ctx, ("cam_z1",), self.repeats, peaks)["cam_z1"]},
                                  k_z1=k, sat=float(saturated(ctx, peaks)))
            finally:
                ctx.set_exposure("cam_z1", nominal)
        if pstore.meta(step, "sat"):
            self.notes.append("mvm2_backward: the pump saturated cam_z1 even at the shortest exposure; the "
                              "probe transmission at the pump is uncertain")
        return homodyne_of(got["pump"], self.lo_z1) / (pstore.meta(step, "k_z1") or 1.0)


def _add_realised(ctx, plans) -> None:
    """Add the realised amplitudes (``A1_real``, ``A2_real``, ``u_real``) and inputs (``x_real``)
    to every step of the plans (programmed values stay under their own keys)."""
    for st in plans["mvm1"] + plans["mvm2"] + plans["mvm2_backward"]:
        if "A1" in st:
            st["A1_real"] = ctx.realised_amplitudes("slm1", st["A1"])
        if "x" in st:
            st["x_real"] = ctx.realised_inputs(st["x"])
        if "A2" in st:
            st["A2_real"] = ctx.realised_amplitudes("slm2", st["A2"])
        if "u" in st:
            st["u_real"] = ctx.realised_amplitudes("probe_input", st["u"])

