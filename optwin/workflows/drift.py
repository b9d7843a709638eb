"""Drift watch: notice when the bench stops matching its twin during training, re-fit what drifted.

Reference measurement
---------------------
``n_inputs`` seeded DMD inputs ``x`` (uniform in [0, 1]) go through the bench with seeded
*reference weights* on the SLMs (amplitude fractions uniform in [-0.9, 0.9] of each layer's
``w_max`` when the watch starts; held fixed, so the residual changes only when the bench
does, not because training moved the weights); the training weights are shown again
afterwards.  Per camera quantity the twin (noiseless) predicts each stage from the bench's
*measured* input of that stage, so a drift shows up where it happens:

====  ==============================  =============================================
name  prediction                      moves with
====  ==============================  =============================================
z1    layer 1 at the realised inputs   laser power (light through MVM-1); LO power
a1    absorber law at measured z1      cell optical depth alpha0; LO power
z2    layer 2 at measured a1           the MVM-2 path; LO power
====  ==============================  =============================================

Every measurement is a *pair* of shots.  With ``e`` the error (measured - predicted) of a
shot, ``s`` the spread (std) of the baseline prediction and means over inputs and outputs,
the systematic residual is ``r^2 = (mean(((e_A + e_B)/2)^2) - mean((e_A - e_B)^2)/4) / s^2``
(the shot noise of the pair's mean removed), and the single-shot noise
``noise^2 = mean((e_A - e_B)^2) / 2 / s^2``.  Watching ``r`` rather than the total error
keeps the watch blind to a noisier readout (less light after a power drop), which no
re-fit can fix.

Baseline and rule
-----------------
At the start ``n_baseline`` pairs give ``r0^2`` (their mean) and ``sd(r^2)``, the
pair-to-pair standard deviation of ``r^2``, estimated model-free from the per-input terms
(their variance across pairs over the number of inputs).  A later pair means *drift* in a
quantity when

    r^2 > r0^2 + max(n_sigma * sd(r^2) * sqrt(1 + 1/n_baseline),  ((1 + min_growth)^2 - 1) * r0^2,
                     (min_noise_fraction * noise)^2)

i.e. the growth is significant (beyond ``n_sigma`` = 3 standard deviations of the
difference from the baseline) *and* relevant: the systematic residual grew by more than
``min_noise_fraction`` = 1 x the single-shot noise ``noise`` (smaller systematic changes are
buried in the noise of every training step, and a re-fit made while the bench keeps
drifting does not reproduce a good baseline better than that) and ``r`` is more than
``min_growth`` = 50 % above
``r0``).  The relevance floor is set by how well a calibration reproduces itself: on the
simulated bench, six repeated MVM re-fits without drift left z1 residuals of 0.014-0.020
against 0.014 for the original calibration.  ``threshold`` (reported) is the square root of the
right-hand side.

Re-fit (through the calibration procedures, i.e. the real device interfaces)
---------------------------------------------------------------------------
The current calibration is copied to ``<refit_base>.refit<n>.h5`` and parts are
re-measured there with :func:`calibration.run.calibrate_bench` (``only=...``) in stages:

1. ``readout`` (LO amplitudes, a fraction of a second): the LO comes from the same laser,
   so a stale LO amplitude scales every homodyne reading with the power;
2. measure again: if ``a1`` still drifts -> ``absorber`` + ``mvm`` (the cell changed; the
   MVM fits are in the absorber's units), else if ``z1`` or ``z2`` do -> ``mvm`` (the light
   through the MVMs changed: ``w_max`` and gains);
3. each stage is adopted at once: the bench system takes the new LO amplitudes, unit scales
   and ``w_max``, the twins (the watch's and, through ``on_refit``, a hybrid run's) the new
   absorber law and MVM fits, and the training weights are shown again; then a last
   measurement gives ``residual_after`` and ``recovered`` (every quantity within threshold).

A re-fit that does not recover (something drifted that these parts do not cover, e.g.
alignment) keeps the new calibration, re-measures the baseline (so the watch does not
re-fit after every epoch) and says so in the event's ``note``: run the full calibration.
"""
from __future__ import annotations

import glob
import math
import time
from pathlib import Path

import numpy as np

__all__ = ["DriftWatch", "DriftWatchError", "QUANTITIES"]

QUANTITIES = ("z1", "a1", "z2")
REF_AMPLITUDE = 0.9


class DriftWatchError(ValueError):
    """The drift watch cannot measure or re-fit (one-line message says why and what to do)."""


class DriftWatch:
    """Watch the bench-vs-twin residual during training and re-fit drifting calibration parts.

    Parameters
    ----------
    bench_system : :class:`hwio.bench_system.BenchSystem` being trained (its bench is driven).
    cal : the :class:`calibration.calset.CalibrationSet` it was built from.
    refit_base : path prefix of re-fit calibration files (``<refit_base>.refit<n>.h5``).
    n_inputs : reference inputs per shot.
    n_baseline : shot pairs of the baseline.
    seed : seeds the reference inputs and weights.
    n_sigma, min_growth, min_noise_fraction : the drift rule (module docstring).
    every_epochs : ``maybe_check(epoch)`` checks when ``epoch`` is a multiple of this.
    refit : re-fit when drift is seen (False: only record the checks).
    on_refit : ``on_refit(cal)`` after a re-fit (e.g. rebuild a training twin from ``cal``).
    progress : show calibration progress bars.
    """

    def __init__(self, bench_system, cal, *, refit_base, n_inputs: int = 32, n_baseline: int = 3, seed: int = 0,
                 n_sigma: float = 3.0, min_growth: float = 0.5, min_noise_fraction: float = 1.0,
                 every_epochs: int = 1, refit: bool = True,
                 on_refit=None, progress: bool = False):
        if n_inputs < 4 or n_baseline < 2:
            raise ValueError(f"the drift watch needs >= 4 reference inputs and >= 2 baseline shot pairs, "
                             f"got {n_inputs} and {n_baseline}")
        if every_epochs < 1:
            raise ValueError(f"drift checks every {every_epochs} epochs: give a positive number of epochs")
        if not (n_sigma > 0 and min_growth >= 0):
            raise ValueError(f"n_sigma must be > 0 and min_growth >= 0, got {n_sigma} and {min_growth}")
        self.bench_system = bench_system
        self.bench = bench_system.bench
        self.cal = cal
        self.refit_base = Path(refit_base)
        self.n_inputs = int(n_inputs)
        self.n_baseline = int(n_baseline)
        self.seed = int(seed)
        self.n_sigma = float(n_sigma)
        self.min_growth = float(min_growth)
        if not min_noise_fraction >= 0:
            raise ValueError(f"min_noise_fraction must be >= 0, got {min_noise_fraction}")
        self.min_noise_fraction = float(min_noise_fraction)
        self.every_epochs = int(every_epochs)
        self.do_refit = bool(refit)
        self.on_refit = on_refit
        self.progress = progress
        self.baseline: dict | None = None
        self.checks: list[dict] = []
        self.events: list[dict] = []
        self._twin = self._noiseless_twin(cal)
        rng = np.random.default_rng([self.seed, 7211])
        n_in, _, _ = bench_system.sizes
        self._x = rng.uniform(0.0, 1.0, (self.n_inputs, n_in))
        self._ref_fractions = [rng.uniform(-REF_AMPLITUDE, REF_AMPLITUDE, w.shape)
                               for w in bench_system.get_weights()]
        self._ref_w_max = None

    # ------------------------------------------------------------------ measurement
    def _noiseless_twin(self, cal):
        from optwin.workflows.from_calibration import twin_from_calibration
        twin = twin_from_calibration(cal, self.bench_system.sizes, rule="probe")
        for layer in twin.layers:
            layer.imperfections.readout_noise = 0.0
        return twin

    def _reference_weights(self) -> list:
        return [f * wm for f, wm in zip(self._ref_fractions, self._ref_w_max)]

    def _measure_raw(self) -> dict:
        """One pass of the reference set: measured and predicted z1, a1, z2 (twin units)."""
        bs = self.bench_system
        training = bs.get_weights()
        ref = self._reference_weights()
        bs.set_weights([w.copy() for w in ref])
        try:
            fw = bs.forward(self._x)
        finally:
            bs.set_weights(training)
        x, z1, z2, a1 = fw.post[0], fw.pre[0], fw.pre[1], fw.post[1]   # x: the inputs the DMD realised
        twin = self._twin
        twin.set_weights([w.copy() for w in ref])
        pred = {"z1": twin.layers[0].forward(x, keep=False),
                "a1": twin.absorber.transmit(z1),
                "z2": twin.layers[1].forward(a1, keep=False)}
        return {"measured": {"z1": z1, "a1": a1, "z2": z2}, "predicted": pred}

    def _pair(self) -> dict:
        """Two shots of the reference set; per quantity (per input i, mean over outputs, twin units^2):
        ``v`` = squared error of the two-shot mean minus its noise share (unbiased systematic part),
        ``noise2`` = single-shot error variance (from the shot-to-shot difference of the errors)."""
        a, b = self._measure_raw(), self._measure_raw()
        out = {}
        for q in QUANTITIES:
            ea = a["measured"][q] - a["predicted"][q]
            eb = b["measured"][q] - b["predicted"][q]
            noise2 = np.mean((ea - eb) ** 2, axis=1) / 2.0
            v = np.mean((0.5 * (ea + eb)) ** 2, axis=1) - noise2 / 2.0
            out[q] = {"v": v, "noise2": noise2, "predicted": 0.5 * (a["predicted"][q] + b["predicted"][q])}
        return out

    def start(self, baseline: dict | None = None) -> dict:
        """Measure the baseline (``n_baseline`` shot pairs), or adopt a saved one (``--resume``).

        Parameters
        ----------
        baseline : a saved ``DriftWatch.baseline`` (None: measure it now).

        Returns
        -------
        dict
            Per quantity ``r0`` (systematic residual), ``threshold``, ``noise`` (single-shot),
            ``sd_r2`` and ``spread`` (std of the prediction, twin units; the residuals are
            relative to it), plus ``w_max_ref`` (twin units), the rule's settings,
            ``bench_clock_s`` and ``seconds`` (s).
        """
        if baseline is not None:
            missing = [k for k in ("r0", "threshold", "spread", "w_max_ref") if k not in baseline]
            if missing:
                raise DriftWatchError(f"saved drift baseline lacks {missing[0]!r}; resume with --no-drift-watch "
                                      f"or start a new run")
            self.baseline = dict(baseline)
            self._ref_w_max = [float(v) for v in baseline["w_max_ref"]]
            return self.baseline
        self._ref_w_max = [float(v) for v in self.bench_system.cal.w_max]
        t0 = time.perf_counter()
        pairs = [self._pair() for _ in range(self.n_baseline)]
        k = len(pairs)
        spread, r0, noise, sd_r2, threshold = {}, {}, {}, {}, {}
        for q in QUANTITIES:
            s = float(np.std(np.mean([p[q]["predicted"] for p in pairs], axis=0)))
            if not s > 0:
                raise DriftWatchError(f"drift watch: the reference predictions of {q} have no spread; "
                                      f"check the calibration and the bench")
            v = np.stack([p[q]["v"] for p in pairs]) / s ** 2           # (pairs, inputs)
            r2 = float(v.mean())
            var_r2 = float(np.mean(v.var(axis=0, ddof=1))) / v.shape[1]  # of one pair's r^2
            noise[q] = math.sqrt(float(np.mean([p[q]["noise2"].mean() for p in pairs]))) / s
            limit_r2 = r2 + max(self.n_sigma * math.sqrt(var_r2 * (1.0 + 1.0 / k)),
                                ((1.0 + self.min_growth) ** 2 - 1.0) * max(r2, 0.0),
                                (self.min_noise_fraction * noise[q]) ** 2)
            spread[q] = s
            r0[q] = math.sqrt(max(r2, 0.0))
            sd_r2[q] = math.sqrt(var_r2)
            threshold[q] = math.sqrt(max(limit_r2, 0.0))
        self.baseline = {"r0": r0, "threshold": threshold, "noise": noise, "sd_r2": sd_r2, "spread": spread,
                         "w_max_ref": self._ref_w_max, "n_inputs": self.n_inputs, "n_pairs": k, "seed": self.seed,
                         "n_sigma": self.n_sigma, "min_growth": self.min_growth, "min_noise_fraction": self.min_noise_fraction,
                         "bench_clock_s": self.bench.timeline.now(), "seconds": time.perf_counter() - t0}
        return self.baseline

    def measure(self) -> dict:
        """Measure one shot pair of the reference set.

        Returns
        -------
        dict
            ``{'residual': {q: systematic nrmse}, 'noise': {q: single-shot nrmse}}`` for q in
            :data:`QUANTITIES`, relative to the baseline's spread of the prediction.
        """
        if self.baseline is None:
            raise RuntimeError("DriftWatch.measure() needs start() first")
        pair = self._pair()
        sp = self.baseline["spread"]
        return {"residual": {q: math.sqrt(max(float(pair[q]["v"].mean()), 0.0)) / sp[q] for q in QUANTITIES},
                "noise": {q: math.sqrt(float(pair[q]["noise2"].mean())) / sp[q] for q in QUANTITIES}}

    def drifted(self, residual: dict) -> list:
        """Quantities whose residual exceeds its threshold.

        Parameters
        ----------
        residual : {q: systematic nrmse} (:meth:`measure`).

        Returns
        -------
        list of str
            The drifted quantities, in :data:`QUANTITIES` order.
        """
        return [q for q in QUANTITIES if residual[q] > self.baseline["threshold"][q]]

    # ------------------------------------------------------------------ checks
    def maybe_check(self, epoch: int) -> dict | None:
        """``check(epoch)`` when ``epoch`` is a multiple of ``every_epochs``.

        Parameters
        ----------
        epoch : epochs done (1-based).

        Returns
        -------
        dict or None
            The re-fit event of :meth:`check`, or None.
        """
        if epoch % self.every_epochs:
            return None
        return self.check(epoch)

    def check(self, epoch: int) -> dict | None:
        """Measure; on drift re-fit (when enabled).  The check is appended to ``checks``.

        Parameters
        ----------
        epoch : epochs done (recorded with the check).

        Returns
        -------
        dict or None
            The re-fit event (:meth:`refit`), or None without drift or with re-fits off.
        """
        m = self.measure()
        residual = m["residual"]
        over = self.drifted(residual)
        self.checks.append({"epoch": int(epoch), "residual": residual, "noise": m["noise"], "drifted": over,
                            "bench_clock_s": self.bench.timeline.now()})
        if not over or not self.do_refit:
            return None
        return self.refit(epoch, residual)

    # ------------------------------------------------------------------ re-fit
    def _next_path(self) -> Path:
        """The next free ``<refit_base>.refit<n>.h5``: a re-fit never replaces an earlier one (of
        this run before a ``--resume``, or of an earlier run under the same name)."""
        n = len(self.events) + 1
        while True:
            path = self.refit_base.with_name(f"{self.refit_base.name}.refit{n}.h5")
            if not any(path.parent.glob(glob.escape(path.name) + "*")):       # the file and its raw/state siblings
                return path
            n += 1

    def recalibrate(self, parts, path=None):
        """Re-measure calibration ``parts`` on the bench and adopt the result.

        Parameters
        ----------
        parts : calibration procedures to run (e.g. ``["readout"]``, ``["absorber", "mvm"]``).
        path : the calibration file to update (default: a copy of the current calibration at
            the next ``<refit_base>.refit<n>.h5``); the other parts' fits come from it.

        Returns
        -------
        CalibrationSet
            The new calibration (``path`` set), now in use.
        """
        from calibration.run import CalibrationRunError, calibrate_bench
        parts = list(parts)
        if path is None:
            path = self._next_path()
            self.cal.save(path)
        exposures = {name: cam.exposure_s for name, cam in self.bench.cameras.items()}
        try:
            cal = calibrate_bench(self.bench, path, only=parts, progress=self.progress)
        except CalibrationRunError as exc:
            raise DriftWatchError(f"drift re-fit ({', '.join(parts)}) failed: {exc}") from None
        for name, cam in self.bench.cameras.items():   # the procedures restore them; make sure
            if cam.exposure_s != exposures[name]:
                cam.exposure_s = exposures[name]
        cal.path = Path(path)
        self.adopt(cal)
        return cal

    def adopt(self, cal) -> None:
        """Use ``cal`` from now on: bench readout (LO amplitudes, unit scales, w_max), twin, SLM frames.

        Parameters
        ----------
        cal : the :class:`calibration.calset.CalibrationSet` to adopt (``on_refit`` gets it too).
        """
        from optwin.workflows.from_calibration import bench_system_from_calibration
        bs = self.bench_system
        training = bs.get_weights()
        fresh = bench_system_from_calibration(self.bench, cal, probe_fraction=bs.cal.probe_fraction)
        bs.cal = fresh.cal
        bs.encoders = fresh.encoders
        self._twin = self._noiseless_twin(cal)
        self.cal = cal
        # the calibration left its own frames on the panels: the probe off, the training weights on
        zero_probe = bs.encoders["probe_input"].encode(np.zeros((1, bs.sizes[2])), w_max=1.0)
        bs.access.show(self.bench.slms["probe_input"], zero_probe, name="probe_input")
        bs.set_weights(training)
        if self.on_refit is not None:
            self.on_refit(cal)

    def refit(self, epoch: int, before: dict) -> dict:
        """Re-fit the drifting parts in stages (module docstring).

        Parameters
        ----------
        epoch : epochs done.
        before : the residuals that showed the drift ({q: systematic nrmse}).

        Returns
        -------
        dict
            The event (also appended to ``events``): ``parts`` re-fitted, ``recovered``, the
            residuals before, after the readout re-fit and after, ``threshold``, ``cal_file``,
            ``seconds`` (wall, s), ``bench_clock_s`` and ``bench_seconds`` (bench clock, s).
        """
        t0 = time.perf_counter()
        clock0 = self.bench.timeline.now()
        path = self._next_path()
        self.cal.save(path)
        parts = ["readout"]
        self.recalibrate(parts, path)
        mid = self.measure()["residual"]
        over = self.drifted(mid)
        more = ["absorber", "mvm"] if "a1" in over else (["mvm"] if over else [])
        if more:
            self.recalibrate(more, path)
            parts += more
        after_m = self.measure()
        after = after_m["residual"]
        still = self.drifted(after)
        event = {"epoch": int(epoch), "drifted_before": self.drifted(before), "parts": parts,
                 "recovered": not still, "residual_before": before, "residual_after_readout": mid,
                 "residual_after": after, "noise_after": after_m["noise"],
                 "threshold": dict(self.baseline["threshold"]), "cal_file": str(path),
                 "seconds": time.perf_counter() - t0, "bench_clock_s": clock0,
                 "bench_seconds": self.bench.timeline.now() - clock0}
        if still:
            event["note"] = (f"{', '.join(still)} still above threshold after re-fitting {', '.join(parts)}; "
                             f"baseline reset to the new level; run the full calibration")
            self.start()
        self.events.append(event)
        return event
