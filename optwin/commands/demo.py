"""``optwin demo``: the main job end to end on the embedded simulated bench."""
from __future__ import annotations

import json

from optwin.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("demo", help="calibrate, twin, train every mode, compare, report (simulated bench)")
    p.add_argument("--out", default="optwin-demo", help="output folder (default ./optwin-demo)")
    p.add_argument("--bench", default="sim", help="bench config (default: the embedded simulated bench)")
    p.add_argument("--epochs", type=int, default=10, help="epochs of bench training (hybrid, optical)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="reuse calibration measured by an interrupted run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from optwin.workflows.demo import run_demo
    if args.epochs < 1:
        raise UsageError("--epochs must be >= 1")
    try:
        res = run_demo(args.out, bench_name=args.bench, epochs=args.epochs, seed=args.seed, quiet=args.json,
                       resume=args.resume)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        print(json.dumps(res, default=float))
    return 0
