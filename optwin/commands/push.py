"""``optwin push``: show a training run's weights on a bench's weight SLMs.

Layer k of the run (``/weights/layer<k>``, shape n_out x n_in) goes to SLM ``slm<k+1>``
(``slm1``: n_hidden x n_in, ``slm2``: n_out x n_hidden), encoded by double-phase
(``hwio.encoding.PhaseEncoder``) through the bench's block layout and an inverse phase
LUT: ``/slm/<name>/inverse_lut`` of the calibration file given with ``--cal``, or, without
it, an ideal linear response over 2 pi (with a warning: the realised weights then carry
the panel's true response error).

Each layer is scaled so that ``w_max`` (default: its largest |weight|) gets full
amplitude: the panel realises ``W / w_max`` (times illumination); the report gives the
``w_max`` used per layer.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from optwin.errors import UsageError

LAYER_SLMS = ("slm1", "slm2")
IDEAL_LUT = "ideal linear response over 2 pi (no calibration)"
_SHOW_ATTEMPTS = 3


def register(sub) -> None:
    p = sub.add_parser("push", help="show trained weights on the bench's weight SLMs",
                       description="Encode a training run's weights (double-phase, through the bench layouts "
                                   "and the calibrated inverse LUT) and show them on slm1 and slm2.")
    p.add_argument("--bench", required=True, help="bench config: a .toml file or a built-in name (sim)")
    p.add_argument("--weights", required=True, help="training-run file written by `optwin train --out`")
    p.add_argument("--cal", help="calibration file holding /slm/<name>/inverse_lut "
                                 "(default: ideal linear response over 2 pi, with a warning)")
    p.add_argument("--w-max", type=float, help="weight that gets full amplitude, same for every layer "
                                               "(default: the largest |weight| of each layer)")
    p.add_argument("--hold-s", type=float, default=0.0,
                   help="keep the bench open this many seconds after showing (window SLMs show only while "
                        "open; Ctrl-C ends the hold)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


# ---------------------------------------------------------------------------------------------
def load_luts(cal_path, slms: dict) -> tuple[dict, list[str]]:
    """Inverse LUT per weight SLM: ``{name: (InverseLUT, source)}`` and warnings.

    With ``cal_path`` None every SLM gets an ideal linear response over 2 pi (and a warning).
    """
    from hwio.response import InverseLUT, PhaseResponse

    luts, warnings = {}, []
    if cal_path is None:
        for name in LAYER_SLMS:
            slm = slms[name]
            luts[name] = (PhaseResponse.linear(slm.bit_depth, name=name).inverse(), IDEAL_LUT)
        warnings.append(f"no --cal given: encoding {', '.join(LAYER_SLMS)} with an ideal linear phase response "
                        f"(0..2 pi over all levels); the realised weights carry the panels' true response "
                        f"error. Calibrate the SLMs and pass --cal cal.h5")
        return luts, warnings
    import h5py
    path = Path(cal_path)
    if not path.is_file():
        raise UsageError(f"{path}: no such calibration file")
    try:
        with h5py.File(path, "r") as f:
            for name in LAYER_SLMS:
                key = f"slm/{name}/inverse_lut"
                if key not in f:
                    raise UsageError(f"{path}: no /{key} (inverse phase LUT of {name}); calibrate the SLM "
                                     f"response first, or omit --cal to push with an ideal response")
                try:
                    lut = InverseLUT.from_hdf5(f[key], bit_depth=slms[name].bit_depth, name=name)
                except (ValueError, TypeError) as exc:
                    raise UsageError(f"{path}: /{key}: {exc}") from None
                luts[name] = (lut, f"{path}:/{key}")
    except UsageError:
        raise
    except OSError as exc:
        raise UsageError(f"{path}: unreadable calibration file ({str(exc).splitlines()[0]}); "
                         f"re-run the calibration or pick another file") from None
    return luts, warnings


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


def push_weights(bench, weights: list, luts: dict, w_max: float | None = None) -> list[dict]:
    """Encode ``weights[k]`` for ``slm<k+1>`` and show it; returns one report dict per SLM.

    Retryable device errors (``DeviceError.retryable``) are retried up to 3 times.
    """
    from hwio.devices import DeviceError
    from hwio.encoding import PhaseEncoder

    check_weights(weights, bench.layouts, bench.name, bench.sizes)
    reports = []
    for k, (w, name) in enumerate(zip(weights, LAYER_SLMS)):
        slm, layout = bench.slms[name], bench.layouts[name]
        lut, source = luts[name]
        enc = PhaseEncoder(layout, slm.shape, lut, name=name)
        try:
            frame = enc.encode(np.asarray(w, dtype=float), w_max=w_max)
        except ValueError as exc:
            raise UsageError(f"/weights/layer{k}: {exc}") from None
        for attempt in range(1, _SHOW_ATTEMPTS + 1):
            try:
                token = slm.show(frame)
                break
            except DeviceError as exc:
                if not exc.retryable or attempt == _SHOW_ATTEMPTS:
                    raise
        reports.append({
            "slm": name, "layer": f"/weights/layer{k}", "weights_shape": list(np.shape(w)),
            "panel_shape": list(slm.shape), "bit_depth": slm.bit_depth, "layout": layout.to_dict(),
            "w_max": float(enc.last_w_max), "max_abs_weight": float(np.max(np.abs(w))),
            "lut": source, "lut_bins": lut.n_bins, "dither_ranks": enc.dither_ranks,
            "levels_min": int(frame.min()), "levels_max": int(frame.max()),
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
    with bench:
        luts, warnings = load_luts(args.cal, bench.slms)
        for w in warnings:
            print(f"optwin push: warning: {w}", file=sys.stderr)
        try:
            reports = push_weights(bench, weights, luts, args.w_max)
        except DeviceError as exc:
            print(f"optwin push: error: {exc} (device {'may recover: retry' if exc.retryable else 'failed'})",
                  file=sys.stderr)
            return 1
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
        print(json.dumps(result))
        return
    kind = "simulated" if result["simulated"] else "real"
    print(f"pushed {result['weights']} to bench {result['bench']} ({kind})")
    for r in result["slms"]:
        shape = "x".join(map(str, r["weights_shape"]))
        print(f"  {r['slm']} <- {r['layer']}: {shape} (n_out x n_in), w_max {r['w_max']:.6g} "
              f"(full amplitude), levels {r['levels_min']}..{r['levels_max']}, frame {r['frame_index']}, "
              f"{r['dither_ranks']} dither ranks per level step, LUT: {r['lut']}")
