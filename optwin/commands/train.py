"""``optwin train``: train the optical network on the twin or, with --system bench, on a bench.

The arguments become one :class:`optwin.settings.TrainSettings` (validated once; flags the
system or mode does not use are refused); the training itself is
:func:`optwin.workflows.twin_training.train_twin` or
:func:`optwin.workflows.bench_training.train_on_bench`.
"""
from __future__ import annotations

import argparse
import sys

from optwin.errors import UsageError
from optwin.settings import (BENCH_LOOP_DEFAULTS, BENCH_TWIN_DEFAULTS, PRETRAIN_DEFAULTS, TASK_DEFAULTS, TASKS,
                             TWIN_DEFAULTS, TrainSettings)

_T, _B, _L = TWIN_DEFAULTS, BENCH_TWIN_DEFAULTS, BENCH_LOOP_DEFAULTS


def _per_task(key: str) -> str:
    return ", ".join(f"{t} {TASK_DEFAULTS[t][key]}" for t in TASK_DEFAULTS)


def _d(twin, insilico, loop) -> str:
    """The defaults of a setting per system and mode, for --help."""
    return f"(default: twin {twin}; bench --mode insilico|ideal {insilico}, hybrid|optical {loop})"


DESCRIPTION = """Train the optical network on the twin (--system twin, the default) or on a bench
(--system bench --bench B --cal cal.h5 --mode M).  Every default is listed with its flag and
recorded in the run file (--out, group /settings).  Bench defaults follow the recipe of the
bench-mode table: --mode insilico|ideal trains the calibrated (or ideal) twin, best of 8 restarts
of 200 epochs; --mode hybrid|optical (default optical) first pre-trains like that, then trains 10
epochs on the bench at Adam lr 0.003 with a cosine decay; both hold out 20 % of the training
samples for early stopping and train towards a one-hot target amplitude derived from the
calibration (--target).  Flags a system or mode does not use are refused."""


def register(sub) -> None:
    p = sub.add_parser("train", help="train the optical network (twin or bench)", description=DESCRIPTION)
    p.add_argument("--system", help="twin (default) or bench")
    p.add_argument("--task", help=f"{', '.join(TASKS)} (default: twin {_T['task']}, bench {_B['task']})")
    p.add_argument("--layers", help="twin: comma-separated sizes including input and output, e.g. 64,64,10 "
                                    f"(default: the task's input, hidden ({_per_task('hidden')}) and classes)")
    p.add_argument("--absorber", help=f"twin: thin, twolevel, doppler or none (linear) (default {_T['absorber']})")
    p.add_argument("--alpha0", type=float, help=f"twin: resonant optical depth of the cell (default {_T['alpha0']:g})")
    p.add_argument("--i-sat", type=float,
                   help=f"twin: saturation intensity, normalised units (default {_T['i_sat']:g})")
    p.add_argument("--rule", help="backward rule at the cell in a twin: probe or exact "
                                  f"{_d(_T['rule'], _B['rule'], _L['rule'] + ' (twin side)')}")
    p.add_argument("--loss", help=f"twin: mse (vs one-hot) or ce (softmax cross-entropy) (default {_T['loss']})")
    p.add_argument("--optimizer", help=f"twin: adam or sgd (default {_T['optimizer']}; the bench uses adam)")
    p.add_argument("--epochs", type=int, help=_d(f"per task: {_per_task('epochs')}", _B["epochs"], _L["epochs"]))
    p.add_argument("--batch", type=int, help=_d(f"per task: {_per_task('batch')}", _B["batch"], _L["batch"]))
    p.add_argument("--lr", type=float, help="learning rate " + _d(f"per task: {_per_task('lr')}", _B["lr"], _L["lr"]))
    p.add_argument("--lr-schedule", choices=("constant", "cosine"),
                   help="learning rate per epoch: constant, or cosine (epoch e of E at lr (1 + cos(pi e/E))/2: "
                        "small last steps, steadier weights at the end of a noisy bench run) "
                        + _d(_T["lr_schedule"], _B["lr_schedule"], _L["lr_schedule"]))
    p.add_argument("--init-scale", type=float,
                   help="initial weights ~ N(0, s^2/n_in) " + _d(f"per task: {_per_task('init_scale')}",
                                                                 _B["init_scale"], _L["init_scale"]))
    p.add_argument("--seed", type=int, help=f"seeds data, initial weights, shuffles and noise (default {_T['seed']})")
    p.add_argument("--n-samples", type=int,
                   help=f"samples of a 2-D task, a quarter of them for testing (default: twin 1000, bench "
                        f"{_B['n_samples']})")
    p.add_argument("--limit-train", type=int, help="twin: use the first N MNIST training images (default: all)")
    p.add_argument("--target", type=float,
                   help="one-hot target amplitude in output units (default: twin 1; bench: what the calibrated "
                        "outputs reach, w_max2 x g(1) of the calibrated cell law, e.g. 0.28 on the sim bench)")
    p.add_argument("--val-fraction", type=float, metavar="F",
                   help="early stopping: hold out this share of the training samples, score them after every "
                        "epoch and keep the best epoch's weights "
                        + _d(f"{_T['val_fraction']:g} (off)", _B["val_fraction"], _L["val_fraction"]))
    p.add_argument("--restarts", type=int, metavar="R",
                   help="train R random initialisations and keep the one with the best validation accuracy "
                        "(needs --val-fraction); --out is rewritten after every restart and --resume skips the "
                        "finished ones " + _d(_T["restarts"], f"{_B['restarts']} (1 with --init-from)",
                                              "refused: see --pretrain-restarts"))
    p.add_argument("--init-from", metavar="RUN.h5",
                   help="start from the weights of a run file of the same task and network shape (default: "
                        "random weights; bench hybrid|optical: pre-trained ones, see --pretrain)")
    p.add_argument("--out", help="write weights, settings and curves to this HDF5 file (a run file; another kind "
                                 "of file is never replaced)")
    p.add_argument("--force", action="store_true", help="replace an existing run file given as --out")
    p.add_argument("--resume", action="store_true", help="continue a killed run from --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    b = p.add_argument_group("bench (--system bench)")
    b.add_argument("--bench", help="bench config: a TOML file or a built-in name such as sim (required)")
    b.add_argument("--cal", help="calibration file of that bench (required)")
    b.add_argument("--allow-other-bench", action="store_true", default=None,
                   help="use a calibration file recorded on another bench (same hardware renamed or re-cabled) "
                        "(default off)")
    b.add_argument("--mode", help="insilico, hybrid, optical or ideal (default optical)")
    b.add_argument("--pretrain", action=argparse.BooleanOptionalAction,
                   help="hybrid|optical without --init-from: pre-train on the calibrated twin first, best of "
                        "--pretrain-restarts (default on; --no-pretrain starts from random weights)")
    b.add_argument("--pretrain-restarts", type=int, metavar="R",
                   help=f"restarts of the pre-training (default {PRETRAIN_DEFAULTS['restarts']})")
    b.add_argument("--pretrain-epochs", type=int,
                   help=f"epochs of each pre-training restart (default {PRETRAIN_DEFAULTS['epochs']})")
    b.add_argument("--pretrain-lr", type=float,
                   help=f"Adam learning rate of the pre-training, constant (default {PRETRAIN_DEFAULTS['lr']:g})")
    b.add_argument("--probe-correction", action=argparse.BooleanOptionalAction,
                   help="optical: multiply the measured hidden errors by the calibrated g'/t at the measured z1 "
                        "(default on; --no-probe-correction trains on the raw probe as the paper)")
    b.add_argument("--drift-watch", action=argparse.BooleanOptionalAction,
                   help="hybrid|optical: check the bench against the twin after every epoch and re-fit drifting "
                        "calibration parts (default on)")
    b.add_argument("--drift-every", type=int, help="hybrid|optical: epochs between drift checks (default 1)")
    p.set_defaults(func=run)


def run(args) -> int:
    """``optwin train``: settings first, then ``--out`` (checked before any work, locked while training)."""
    settings = TrainSettings.from_args(args)
    if args.force and not args.out:
        raise UsageError("--force replaces an existing --out run file; give --out")
    if args.resume and not args.out:
        raise UsageError("--resume needs --out (the run file to continue)")
    if not args.out:
        return _train(settings, args)
    from optwin.outputs import RUN, guard_output, output_lock
    guard_output(args.out, RUN, force=args.force, resume=args.resume, flag="--out", resumable=True)
    with output_lock(args.out):
        return _train(settings, args)


def _train(settings: TrainSettings, args) -> int:
    progress = not (args.json or args.no_progress) and sys.stderr.isatty()
    if settings.system == "bench":
        from optwin.workflows.bench_training import train_on_bench
        result = train_on_bench(settings, out=args.out, resume=args.resume, progress=progress)
    else:
        from optwin.workflows.twin_training import train_twin
        result = train_twin(settings, out=args.out, resume=args.resume, progress=progress)
    if args.out:
        result["out"] = str(args.out)
    if args.json:
        from optwin.outputs import print_json
        print_json(result)
    elif settings.system == "bench":
        _print_bench(result)
    else:
        _print_twin(result)
    return 0


def _print_twin(result: dict) -> None:
    print(f"{result['task']}: layers {result['layers']}, {result['absorber']} absorber "
          f"(alpha0={result['alpha0']}), rule {result['rule']}")
    rate = result["samples_per_second"]
    print(f"  {result['epochs']} epochs in {result['seconds']:.1f} s"
          + (f" ({rate:.0f} samples/s)" if rate is not None else ""))
    print(f"  train accuracy {result['train_accuracy']:.4f}, test accuracy {result['test_accuracy']:.4f}, "
          f"final loss {result['final_loss']:.4g}")
    if result.get("out"):
        print(f"  saved to {result['out']}")


def _print_bench(result: dict) -> None:
    from optwin.workflows.bench_training import describe_refit
    pre = result.get("pretrain")
    if pre:
        print(f"pre-trained on the calibrated twin: restart {pre['restart'] + 1} of "
              f"{len(pre['restart_val_accuracy'])} kept, bench accuracy {pre['bench_accuracy']:.3f} "
              f"({pre['seconds']:.0f} s)")
    if result.get("restarts"):
        print(f"restart {result['restart'] + 1} of {result['restarts']} kept (validation accuracy "
              f"{result['restart_val_accuracy'][result['restart']]:.3f})")
    bench = "-" if result["mode"] == "ideal" else f"{result['bench_accuracy']:.3f}"
    print(f"{result['mode']} on {result['bench_name']}: bench accuracy {bench}, twin accuracy "
          f"{result['twin_accuracy']:.3f}, {result['epochs']} epochs in {result['seconds']:.0f} s "
          f"(target {result['target']:g})")
    for ev in result.get("drift_refits", []):
        print("  " + describe_refit(ev))
    if result.get("out"):
        print(f"  saved to {result['out']}")
