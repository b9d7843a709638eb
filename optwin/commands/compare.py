"""``optwin compare``: the same inputs through the calibrated twin and the bench, with a report.

``--report DIR`` gets ``compare.html``, ``mvm_scatter.png`` and ``activation.png``.  It is created
when missing; an earlier compare report there is replaced only with ``--force``, and a folder
holding such files that optwin compare did not write is refused (checked before the bench opens).
"""
from __future__ import annotations

from pathlib import Path

from optwin.errors import UsageError


def register(sub) -> None:
    p = sub.add_parser("compare", help="compare the calibrated twin with the bench (figures + HTML)",
                       description="Send the same inputs through the calibrated twin and the bench and report, per "
                                   "matrix-vector multiplication, the twin's error against the bench's own noise "
                                   "floor (compare.html with figures in --report DIR).")
    p.add_argument("--bench", required=True, help="bench config (TOML path or embedded name)")
    p.add_argument("--cal", required=True, help="calibration file from 'optwin calibrate'")
    p.add_argument("--allow-other-bench", action="store_true",
                   help="use a calibration file recorded on another bench (same hardware renamed or re-cabled)")
    p.add_argument("--run", help="training run whose weights to compare with (default: random weights)")
    p.add_argument("--report", required=True, help="folder for the PNG figures and compare.html")
    p.add_argument("--force", action="store_true", help="replace an earlier compare report in --report")
    p.add_argument("--inputs", type=int, default=48, help="random inputs per MVM (default 48)")
    p.add_argument("--repeats", type=int, default=3, help="bench repeats for the noise floor (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    """``optwin compare``: check ``--report`` before any work, hold its lock while comparing."""
    if args.inputs < 4 or args.repeats < 2:
        raise UsageError("--inputs must be >= 4 and --repeats >= 2 (the noise floor needs repeats)")
    from optwin.outputs import COMPARE_REPORT, guard_folder, output_lock
    out = guard_folder(args.report, COMPARE_REPORT, writes=REPORT_FILES, markers=(("compare.html", COMPARE_REPORT),),
                       force=args.force, flag="--report")
    with output_lock(out, flag="--report"):
        return _compare(args, out)


#: what ``optwin compare`` writes into ``--report``
REPORT_FILES = ("compare.html", "mvm_scatter.png", "activation.png")


def _compare(args, out: Path) -> int:
    """Measure and write the report into the checked, locked folder ``out``."""
    from hwio.bench import open_bench
    from optwin.outputs import print_json
    from optwin.workflows.compare import measure_agreement
    from optwin.workflows.compare_plots import READABLE, plot_activation, plot_mvm_scatter, write_compare_report
    from optwin.workflows.from_calibration import (bench_system_from_calibration, check_calibration_bench,
                                                   load_calibration, twin_from_calibration)

    cal = load_calibration(args.cal)
    try:
        bench = open_bench(args.bench)
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    with bench:
        check_calibration_bench(cal, bench, args.cal, allow_other=args.allow_other_bench, command="optwin compare")
        system = bench_system_from_calibration(bench, cal)
        twin = twin_from_calibration(cal, system.sizes, seed=args.seed, init_scale=3.0)
        if args.run:
            from optwin.runfile import load_run
            weights = load_run(args.run)["weights"]
            if [w.shape for w in weights] != [w.shape for w in twin.get_weights()]:
                raise UsageError(f"{args.run}: weight shapes {[w.shape for w in weights]} do not fit the bench")
        else:
            weights = twin.get_weights()
        system.set_weights([w.copy() for w in weights])
        agreement = measure_agreement(system, twin, n_inputs=args.inputs, repeats=args.repeats, seed=args.seed)
    figures = [("MVM agreement (Fig. 2a)", plot_mvm_scatter(agreement, out / "mvm_scatter.png")),
               ("activation (Fig. 2b)", plot_activation(agreement, twin, out / "activation.png"))]
    summary = dict(agreement["summary"])
    page = write_compare_report(out, summary, figures, stats=agreement["stats"])
    result = dict(summary, report=str(page))
    if args.json:
        print_json(result)
    else:
        st = agreement["stats"]
        print(f"{'MVM':<40} {'nrmse':>7} {'noise floor':>12} {'ratio':>6}")
        for key in ("mvm1", "mvm2_forward", "mvm2_backward"):
            total, floor = st[key]["total_nrmse"], st[key]["noise_floor_nrmse"]
            ratio = f"{total / floor:6.2f}" if floor else "     -"
            print(f"{READABLE[key]:<40} {total:7.4f} {floor:12.4f} {ratio}")
        print(f"activation rms error: {result['activation_rmse']:.4f} twin field units")
        print(f"report: {page}")
    return 0
