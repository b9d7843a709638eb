"""``optwin push``: show a training run's weights on a bench's weight SLMs.

Layer k of the run (``/weights/layer<k>``, shape n_out x n_in) goes to SLM ``slm<k+1>``
(``slm1``: n_hidden x n_in, ``slm2``: n_out x n_hidden), encoded by double-phase through the
bench's block layout.  With ``--cal`` (a file from ``optwin calibrate``, or lab-file fits
written with ``--out``) the frames are built by :mod:`calibration.deploy`, the same code the
bench system uses during training: the calibrated inverse LUT, the encoding (dithering) the
file records, and each layer's calibrated weight range ``w_max`` (the twin weight a panel
realises at full amplitude), so the panels show exactly what training showed.  The file
must belong to this bench (:mod:`calibration.fingerprint`; ``--allow-other-bench`` to
override).

Without ``--cal`` the panels get an ideal linear response over 2 pi and each layer is
scaled so that its largest |weight| gets full amplitude (with a warning: the realised
weights then carry the panels' true response error and an arbitrary scale).  ``--w-max``
sets one weight range for every layer explicitly.
"""
from __future__ import annotations

import math
import sys
import time

import numpy as np

from optwin.errors import UsageError

LAYER_SLMS = ("slm1", "slm2")
IDEAL_LUT = "ideal linear response over 2 pi (no calibration)"


def register(sub) -> None:
    p = sub.add_parser("push", help="show trained weights on the bench's weight SLMs",
                       description="Encode a training run's weights (each panel's encoding: double phase or blazed "
                                   "grating, through the bench layouts, the calibrated inverse LUTs and weight "
                                   "ranges) and show them on slm1 and slm2.")
    p.add_argument("--bench", required=True, help="bench config: a .toml file or a built-in name (sim)")
    p.add_argument("--weights", required=True, help="training-run file written by `optwin train --out`")
    p.add_argument("--cal", help="calibration file from `optwin calibrate` (or lab-file fits saved with --out); "
                                 "default: ideal linear response over 2 pi, with a warning")
    p.add_argument("--w-max", type=float, help="weight that gets full amplitude, same for every layer "
                                               "(default: the calibrated weight range of each layer; without "
                                               "one, the largest |weight| of each layer)")
    p.add_argument("--allow-other-bench", action="store_true",
                   help="use a calibration file recorded on another bench (same hardware renamed or re-cabled)")
    p.add_argument("--hold-s", type=float, default=0.0,
                   help="keep the bench open this many seconds after showing (window SLMs show only while "
                        "open; Ctrl-C ends the hold)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
class PushPlan:
    """How each weight panel encodes: its encoder, LUT source and weight range.

    Attributes
    ----------
    encoders : dict panel -> :class:`hwio.encoding.PhaseEncoder`.
    lut_sources : dict panel -> one-line description of the LUT.
    w_max : list per layer of the weight at full amplitude, or None (largest |weight|).
    w_max_sources : list per layer of where ``w_max`` comes from.
    warnings : list of one-line warnings for the user.
    """

    def __init__(self, encoders, lut_sources, w_max, w_max_sources, warnings):
        self.encoders = encoders
        self.lut_sources = lut_sources
        self.w_max = w_max
        self.w_max_sources = w_max_sources
        self.warnings = warnings


def plan_push(bench, cal=None, w_max: float | None = None, source: str = "calibration file",
              allow_other_bench: bool = False) -> PushPlan:
    """Encoders and weight ranges for ``bench`` from a calibration (or ideal ones without).

    Parameters
    ----------
    bench : the opened bench.
    cal : a :class:`calibration.calset.CalibrationSet`, or None (ideal linear LUT, warning).
    w_max : one weight range for every layer (overrides the calibrated one).
    source : the calibration file's name for messages.
    allow_other_bench : accept a file recorded on another bench (warning instead of error).
    """
    from calibration.deploy import DeployError, phase_encoder, weight_range
    from hwio.response import PhaseResponse

    warnings, encoders, sources = [], {}, {}
    if cal is None:
        for name in LAYER_SLMS:
            ideal = PhaseResponse.linear(bench.slms[name].bit_depth, name=name).inverse()
            encoders[name], _ = phase_encoder({}, bench, name, fallback_lut=ideal)
            sources[name] = IDEAL_LUT
        warnings.append(f"no --cal given: encoding {', '.join(LAYER_SLMS)} with an ideal linear phase response "
                        f"(0..2 pi over all levels); the realised weights carry the panels' true response "
                        f"error. Calibrate the SLMs and pass --cal cal.h5")
        fits = {}
    else:
        from calibration.fingerprint import check_bench
        fits = cal.fits
        try:
            warnings += check_bench(cal, bench, source=source, allow_other=allow_other_bench)
            for name in LAYER_SLMS:
                encoders[name], how = phase_encoder(fits, bench, name)
                sources[name] = f"{source}: {how}"
        except DeployError as exc:
            raise UsageError(f"{source}: {exc}" if not str(exc).startswith(source) else str(exc)) from None
    ranges, range_sources = [], []
    for k, name in enumerate(LAYER_SLMS):
        if w_max is not None:
            ranges.append(float(w_max))
            range_sources.append("--w-max")
            continue
        try:
            calibrated = weight_range(fits, k)
        except DeployError as exc:
            raise UsageError(f"{source}: {exc}") from None
        ranges.append(calibrated)
        range_sources.append(f"calibrated (mvm{k + 1}.w_max)" if calibrated is not None else "largest |weight|")
    if cal is not None and None in ranges:
        warnings.append(f"{source} has no MVM calibration: each layer is scaled so that its largest |weight| gets "
                        f"full amplitude, not at the range the bench trains with; run 'optwin calibrate --only mvm' "
                        f"or give --w-max")
    return PushPlan(encoders, sources, ranges, range_sources, warnings)


def check_weights(weights: list, layouts: dict, bench_name: str, sizes, source: str = "run") -> None:
    """UsageError unless the run has one matrix per weight SLM, each matching its layout."""
    if len(weights) != len(LAYER_SLMS):
        raise UsageError(f"{source}: has {len(weights)} weight layer(s), bench {bench_name!r} has "
                         f"{len(LAYER_SLMS)} weight SLMs ({', '.join(LAYER_SLMS)}); train a network with one "
                         f"hidden layer: --layers {sizes.n_in},{sizes.n_hidden},{sizes.n_out}")
    for k, (w, name) in enumerate(zip(weights, LAYER_SLMS)):
        lay = layouts[name]
        if np.ndim(w) != 2 or tuple(np.shape(w)) != (lay.n_rows, lay.n_cols):
            raise UsageError(f"{source}: /weights/layer{k} is {'x'.join(map(str, np.shape(w)))} (n_out x n_in) "
                             f"but {name} of bench {bench_name!r} holds {lay.n_rows}x{lay.n_cols}; train with "
                             f"--layers {sizes.n_in},{sizes.n_hidden},{sizes.n_out}")


def push_weights(bench, weights: list, plan: PushPlan) -> list[dict]:
    """Encode ``weights[k]`` for ``slm<k+1>`` as ``plan`` says and show it; one report dict per SLM.

    Weights beyond a calibrated range are clipped (as during training), with a warning in
    ``plan.warnings``; beyond an explicit ``--w-max`` they are refused.  Panel writes follow
    the device-access policy of :mod:`hwio.device_access` (retryable errors retried
    :data:`~hwio.device_access.DEFAULT_RETRIES` times, as during training and calibration).

    Parameters
    ----------
    bench : the opened bench.
    weights : one (n_out, n_in) array per layer, in twin weight units.
    plan : the encoders and weight ranges (:func:`plan_push`).

    Returns
    -------
    list of dict
        Per SLM: shapes, ``w_max`` (twin units), clipped fraction, LUT, level range, frame index
        and ``settled_s`` (bench clock, s).
    """
    from calibration.deploy import layer_frame
    from hwio.device_access import DeviceAccess

    check_weights(weights, bench.layouts, bench.name, bench.sizes)
    access = DeviceAccess()
    reports = []
    for k, (w, name) in enumerate(zip(weights, LAYER_SLMS)):
        slm, layout = bench.slms[name], bench.layouts[name]
        enc = plan.encoders[name]
        w = np.asarray(w, dtype=float)
        peak = float(np.max(np.abs(w))) if w.size else 0.0
        w_max = plan.w_max[k] if plan.w_max[k] is not None else peak
        if not (np.all(np.isfinite(w)) and w_max > 0):
            raise UsageError(f"/weights/layer{k}: weights must be finite and not all zero")
        if plan.w_max_sources[k] == "--w-max" and peak > w_max:
            raise UsageError(f"/weights/layer{k}: largest |weight| {peak:.6g} exceeds --w-max {w_max:.6g}; "
                             f"raise w_max or omit it")
        frame, clipped = layer_frame(enc, w, w_max)
        if clipped > 0:
            plan.warnings.append(f"/weights/layer{k}: {100 * clipped:.1f} % of the weights exceed the calibrated "
                                 f"range +-{w_max:.6g} and were clipped (as training clips them); was the run "
                                 f"trained with this calibration?")
        token = access.show(slm, frame, name=name)
        reports.append({
            "slm": name, "layer": f"/weights/layer{k}", "weights_shape": list(np.shape(w)),
            "panel_shape": list(slm.shape), "bit_depth": slm.bit_depth, "layout": layout.to_dict(),
            "w_max": float(w_max), "w_max_source": plan.w_max_sources[k], "max_abs_weight": peak,
            "clipped_fraction": clipped, "lut": plan.lut_sources[name], "lut_bins": enc.lut.n_bins,
            "dither_ranks": enc.dither_ranks, "levels_min": int(frame.min()), "levels_max": int(frame.max()),
            "frame_index": token.frame_index, "settled_s": token.settled_s,
        })
    return reports


def run(args) -> int:
    from hwio.devices import DeviceError
    from optwin.runfile import load_run

    if args.w_max is not None and not (math.isfinite(args.w_max) and args.w_max > 0):
        raise UsageError(f"--w-max must be a finite number > 0, got {args.w_max}")
    if not (math.isfinite(args.hold_s) and args.hold_s >= 0):
        raise UsageError(f"--hold-s must be a number of seconds >= 0, got {args.hold_s}")
    run_data = load_run(args.weights)
    weights = run_data["weights"]
    try:
        from hwio.bench import open_bench, load_bench_config
        cfg = load_bench_config(args.bench)
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    check_weights(weights, cfg.layouts, cfg.name, cfg.sizes, source=str(args.weights))
    try:
        bench = open_bench(args.bench)
    except (ValueError, ImportError) as exc:
        raise UsageError(str(exc)) from None
    cal = None
    if args.cal is not None:
        from optwin.workflows.from_calibration import load_calibration
        cal = load_calibration(args.cal)
    with bench:
        plan = plan_push(bench, cal, args.w_max, source=str(args.cal), allow_other_bench=args.allow_other_bench)
        try:
            reports = push_weights(bench, weights, plan)
        except DeviceError as exc:
            print(f"optwin push: error: {exc} (device {'may recover: retry' if exc.retryable else 'failed'})",
                  file=sys.stderr)
            return 1
        warnings = plan.warnings
        for w in warnings:
            print(f"optwin push: warning: {w}", file=sys.stderr)
        result = {"bench": bench.name, "simulated": bool(bench.simulated), "weights": str(args.weights),
                  "cal": None if args.cal is None else str(args.cal), "slms": reports, "warnings": warnings}
        print_result(result, args.json)
        if args.hold_s > 0:
            print(f"optwin push: holding the frames for {args.hold_s:g} s (Ctrl-C to stop)", file=sys.stderr)
            try:
                time.sleep(args.hold_s)
            except KeyboardInterrupt:
                pass
    return 0


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        from optwin.outputs import print_json
        print_json(result)
        return
    kind = "simulated" if result["simulated"] else "real"
    print(f"pushed {result['weights']} to bench {result['bench']} ({kind})")
    for r in result["slms"]:
        shape = "x".join(map(str, r["weights_shape"]))
        print(f"  {r['slm']} <- {r['layer']}: {shape} (n_out x n_in), w_max {r['w_max']:.6g} "
              f"(full amplitude; {r['w_max_source']}), levels {r['levels_min']}..{r['levels_max']}, frame {r['frame_index']}, "
              f"{r['dither_ranks']} dither ranks per level step, LUT: {r['lut']}")
