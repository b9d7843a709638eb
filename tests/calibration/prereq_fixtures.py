"""Test scaffolding for the absorber/MVM procedure tests: the fits those procedures need
(registration, dark maps, LO amplitudes, SLM LUTs), made from the simulated bench's truth
where the procedure under test does not care how they were obtained (spot centres, phase
tables) and measured where that is quick (dark maps, LO amplitudes).

Never use this outside tests: it reads the bench's ground truth.
"""
from __future__ import annotations

import numpy as np

from calibration.procedures.context import CalContext, SLM_FIT_NAMES, camera_fit_name
from calibration.quantities import Fit, Quantity
from hwio.encoding import realised_weights
from hwio.response import PhaseResponse
from hwio.sim.optics import crosstalk_matrix
from hwio.sim.testing import open_with, truth_of

QUIET = {"truth": {"faults": {"camera_timeout_rate": 0.0, "dropped_frame_rate": 0.0, "stale_frame_rate": 0.0,
                              "slm_write_failure_rate": 0.0}}}


def prerequisite_fits(bench, n_dark: int = 8, n_lo: int = 8) -> list:
    truth = truth_of(bench)
    fits = []
    reg = Fit("registration", "truth", arrays={f"centers_px.{c}": np.asarray(truth.realised["spot_positions_px"][c])
                                               for c in bench.cameras})
    fits.append(reg)
    for name, fit_name in SLM_FIT_NAMES.items():
        table = np.asarray(truth.realised["phase_table_rad"][name])
        lut = PhaseResponse(table, name=name).inverse()
        grid = lut.phase_min_rad + 2 * np.pi * np.arange(lut.n_bins) / lut.n_bins
        fits.append(Fit(fit_name, "truth", arrays={"phase_response_rad": table, "inverse_lut": np.asarray(lut.levels),
                                                   "inverse_lut_phase_rad": grid}))
    ctx = CalContext(bench, fits={f.name: f for f in fits})
    flat = bench.slms["flat_source"]
    ctx.show("flat_source", np.zeros(flat.shape, dtype=flat.level_dtype))
    for cam in bench.cameras:
        dark = ctx.grab_mean(cam, n_dark)
        fits.append(Fit(camera_fit_name(cam), "dark", arrays={"offset_map_adu": dark}))
    ctx = CalContext(bench, fits={f.name: f for f in fits})
    ctx.blank_all()
    stacks = {}
    for phase in (0.0, np.pi):      # LO at 0 and pi: the LO's interference with stray light cancels
        ctx.set_lo(phase)
        for cam in bench.cameras:
            stacks.setdefault(cam, []).append(ctx.grab_stack(cam, n_lo))
    for cam in bench.cameras:
        ct = truth.cameras[cam]
        radius = 3.0 * ct.psf_sigma_px
        ro = ctx.readout(cam, radius)
        # laser-on background light in the ROI (from the truth: this scaffolding is not under test)
        bg = ro.n_pixels * ct.background_photons_per_s * bench.cameras[cam].exposure_s * ct.qe * ct.gain_adu_per_e
        lo = np.sqrt(ro.power(np.concatenate(stacks[cam])).mean(axis=0) - bg)
        fits.append(Fit(f"readout.{cam}", "lo", quantities={"roi_radius_px": Quantity(radius, 0.0, "px")},
                        arrays={"lo_amplitude": lo}))
    return fits


def context_with_prereqs(name="sim", overrides=None, recorder=None):
    bench = open_with(name, overrides if overrides is not None else QUIET)
    fits = prerequisite_fits(bench)
    return bench, CalContext(bench, recorder=recorder, fits={f.name: f for f in fits})


def true_z1(bench, slm1_levels, fill):
    """Complex hidden-layer field of the simulator (cell units) for a slm1 frame and equal fills (truth)."""
    t = truth_of(bench)
    n_in = bench.sizes.n_in
    lay = bench.layouts["slm1"]
    resp = PhaseResponse(np.asarray(t.realised["phase_table_rad"]["slm1"]))
    e1 = realised_weights(slm1_levels, lay, resp, 1.0, t.slms["slm1"].crosstalk_px, complex_field=True)
    e1 = e1 * t.realised["illumination"]["slm1"][:, :n_in]
    x = np.full(n_in, fill) * t.realised["illumination"]["input"][0, :n_in]
    k1 = t.optics.layer_gain[0]
    c1 = crosstalk_matrix(bench.sizes.n_hidden, t.optics.output_crosstalk[0])
    return c1 @ (k1 * e1 @ x + t.realised["stray_field"]["layer1"])


def twin_over_true_z1(bench, cal, fills=(0.35, 0.7), repeats: int = 24) -> list:
    """Twin field z1 = h_z1 * z1_per_h over the simulator's cell field / sqrt(I_sat), per hidden
    neuron and fill (truth), measured with the calibration's context at the absorber sweep's
    time: the laser drifts, and h_z1 (signal x LO) and the cell field follow it differently.
    ``mean(log(ratio))`` gives i_sat(fit) / i_sat(true) = exp(mean)^-2."""
    import math

    from calibration.procedures.absorber import full_pump_levels
    from calibration.procedures.steps import homodyne_of, repeated_powers
    t = truth_of(bench)
    bench.timeline.sleep(max(0.0, cal.fits["absorber"].info["alpha0_at_s"] - bench.timeline.now()))
    ctx = CalContext(bench, fits=dict(cal.fits))
    frame = full_pump_levels(ctx)
    ctx.blank_all()
    ctx.show("slm1", frame)
    ratios = []
    for fill in fills:
        ctx.show_inputs(np.full(bench.sizes.n_in, fill))
        realised = float(ctx.dmd.fill_fractions(np.full((1, bench.sizes.n_in), fill))[0, 0])
        h = homodyne_of(repeated_powers(ctx, ("cam_z1",), repeats)["cam_z1"], ctx.lo_amplitude("cam_z1")).mean(0)
        z_twin = h * cal.quantity("scale.z1_per_h").value
        power = 1.0 + t.drift.laser_power_per_hour * bench.timeline.now() / 3600.0   # relative laser power
        z_true = math.sqrt(power) * true_z1(bench, frame, realised).real / math.sqrt(t.absorber.i_sat)
        ratios.append(z_twin / z_true)
    return ratios
