"""``optwin demo``: the main job end to end on the embedded simulated bench.

``--out DIR`` is created when missing.  A folder holding an earlier demo (its ``results.json``,
``cal.h5`` or calibration state) is replaced only with ``--force`` or continued with
``--resume``; a folder holding files the demo writes (``cal.h5*``, ``calibration/``, ``*.png``,
``compare.html``, ``report.html``, ``results.json``) that no demo wrote is refused.  Checked
before anything is measured.
"""
from __future__ import annotations

from pathlib import Path

from optwin.errors import UsageError
from optwin.settings import BENCH_LOOP_DEFAULTS

#: what the demo writes into its folder (glob patterns)
DEMO_FILES = ("cal.h5*", "calibration", "*.png", "compare.html", "report.html", "results.json")


def register(sub) -> None:
    p = sub.add_parser("demo", help="calibrate, twin, train every mode, compare, report (simulated bench)",
                       description="The main job end to end on a (simulated) bench: calibrate it, build the "
                                   "calibrated twin, train moons, rings and XOR in every mode with the defaults of "
                                   "`optwin train --system bench` (twin rows: best of 8 restarts of 200 epochs; bench "
                                   "rows: 10 epochs fine-tuning the calibrated in-silico weights at lr 0.003, cosine; "
                                   "early stopping on 20 % of the training samples; target amplitude from the "
                                   "calibration), compare twin and bench, write DIR/report.html and results.json.")
    p.add_argument("--out", default="optwin-demo", help="output folder (default ./optwin-demo)")
    p.add_argument("--bench", default="sim", help="bench config (default: the embedded simulated bench)")
    p.add_argument("--epochs", type=int,
                   help=f"epochs of bench training (hybrid, optical) (default {BENCH_LOOP_DEFAULTS['epochs']})")
    p.add_argument("--seed", type=int, default=0, help="seeds data, initial weights, shuffles and noise (default 0)")
    p.add_argument("--resume", action="store_true", help="reuse calibration measured by an interrupted run")
    p.add_argument("--force", action="store_true", help="replace an earlier demo in --out")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    from optwin.workflows.demo import run_demo
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be a whole number >= 1, got {args.epochs}")
    if args.seed < 0:
        raise UsageError(f"--seed must be a whole number >= 0, got {args.seed}")
    from optwin.outputs import output_lock, print_json
    out = _guard_demo_folder(args)
    with output_lock(out):
        try:
            res = run_demo(out, bench_name=args.bench, epochs=args.epochs, seed=args.seed, quiet=args.json,
                           resume=args.resume)
        except (ValueError, OSError) as exc:
            raise UsageError(str(exc)) from None
    if args.json:
        print_json(res)
    return 0


def _guard_demo_folder(args) -> Path:
    """Check (and create) ``--out`` before anything is measured (:mod:`optwin.outputs`)."""
    from calibration.run import state_paths
    from optwin.outputs import (CALIBRATION, CALIBRATION_STATE, DEMO_RESULTS, RECORDING, guard_folder,
                                guard_output)
    out = guard_folder(args.out, DEMO_RESULTS, writes=DEMO_FILES, force=args.force, resume=args.resume,
                       resumable=True, create=False, markers=(("results.json", DEMO_RESULTS), ("cal.h5", CALIBRATION),
                                                              ("cal.h5.state.json", CALIBRATION_STATE)))
    if out.is_dir():       # the calibration inside is judged by content, like `optwin calibrate --out`
        paths = state_paths(out / "cal.h5")
        allowed = bool(args.force or args.resume)
        guard_output(out / "cal.h5", CALIBRATION, force=args.force, resume=args.resume, resumable=True,
                     siblings=[(paths["raw"], RECORDING, allowed), (paths["state"], CALIBRATION_STATE, allowed),
                               (paths["fits"], CALIBRATION, allowed)])
    out.mkdir(parents=True, exist_ok=True)
    return out
