"""``optwin train``: train the optical network on the twin (and, with --system bench, on a bench)."""
from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from optwin.errors import UsageError

# Per-task defaults a physicist can override with flags.
TASK_DEFAULTS = {
    "digits": {"hidden": [64], "lr": 2e-3, "epochs": 30, "batch": 64, "init_scale": 1.0},
    "mnist": {"hidden": [128, 128], "lr": 5e-4, "epochs": 10, "batch": 64, "init_scale": 1.0},
    "moons": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "rings": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "circles": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "xor": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
}


def register(sub) -> None:
    p = sub.add_parser("train", help="train the optical network (twin or bench)",
                       description="Train the optical network. Defaults depend on the task "
                                   "(see optwin.commands.train.TASK_DEFAULTS).")
    p.add_argument("--system", default="twin", help="twin (default) or bench")
    p.add_argument("--task", default="digits", help="moons, rings, xor, digits or mnist")
    p.add_argument("--layers", help="comma-separated sizes including input and output, e.g. 64,64,10")
    p.add_argument("--absorber", default="thin", help="thin, twolevel, doppler or none (linear)")
    p.add_argument("--alpha0", type=float, default=10.0, help="resonant optical depth of the cell")
    p.add_argument("--i-sat", type=float, default=1.0, help="saturation intensity (normalised units)")
    p.add_argument("--rule", help="backward rule at the cell in the twin: probe or exact (default: probe for "
                                  "--system twin, exact for the twin side of bench modes)")
    p.add_argument("--loss", default="mse", help="mse (vs one-hot, default) or ce (softmax cross-entropy)")
    p.add_argument("--optimizer", default="adam", help="adam or sgd")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--init-scale", type=float, help="initial weights ~ N(0, s^2/n_in)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-samples", type=int, help="samples of a 2-D toy task (default 1000)")
    p.add_argument("--limit-train", type=int, help="use the first N MNIST training images")
    p.add_argument("--out", help="write weights, settings and curves to this HDF5 file (a run file; another kind "
                                 "of file is never replaced)")
    p.add_argument("--force", action="store_true", help="replace an existing run file given as --out")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    # bench options (issue: hardware-in-the-loop)
    p.add_argument("--bench", help="bench config (with --system bench)")
    p.add_argument("--cal", help="calibration file (with --system bench)")
    p.add_argument("--allow-other-bench", action="store_true",
                   help="use a calibration file recorded on another bench (same hardware renamed or re-cabled)")
    p.add_argument("--mode", help="insilico, hybrid, optical or ideal (with --system bench)")
    p.add_argument("--resume", action="store_true", help="continue a killed run from --out")
    p.add_argument("--init-from", metavar="RUN.h5",
                   help="start from the weights of a run file (e.g. an insilico run to fine-tune on the bench)")
    p.add_argument("--drift-watch", action=argparse.BooleanOptionalAction, default=None,
                   help="check the bench against the twin after every epoch and re-fit drifting calibration "
                        "parts (default: on for --mode hybrid and optical)")
    p.add_argument("--drift-every", type=int, help="epochs between drift checks (default 1)")
    p.add_argument("--target", type=float,
                   help="one-hot target amplitude in output units (default 1); a bench whose outputs "
                        "cannot reach 1 may train better towards a smaller one (README, training modes)")
    p.add_argument("--val-fraction", type=float, default=0.0, metavar="F",
                   help="early stopping: hold out this share of the training samples, score them after every "
                        "epoch and keep the best epoch's weights (default 0: off; e.g. 0.2)")
    p.add_argument("--lr-schedule", default="constant", choices=("constant", "cosine"),
                   help="learning rate per epoch: constant (default) or cosine (decays to small last steps; "
                        "steadier weights at the end of a noisy bench run)")
    p.add_argument("--restarts", type=int, default=1, metavar="R",
                   help="train R random initialisations and keep the one with the best validation accuracy "
                        "(needs --val-fraction; twin, or bench --mode insilico|ideal); --out is rewritten "
                        "after every restart and --resume skips the finished ones")
    p.add_argument("--probe-correction", action=argparse.BooleanOptionalAction, default=True,
                   help="optical mode: multiply the measured hidden errors by the calibrated g'/t at the "
                        "measured z1 (default on; --no-probe-correction trains on the raw probe as the paper)")
    p.set_defaults(func=run)


def resolve_settings(args) -> dict:
    """Merge flags with the task's defaults and validate them (UsageError on bad values)."""
    from twin.tasks import TASKS
    if args.task not in TASKS:
        raise UsageError(f"unknown task {args.task!r}; choose one of {', '.join(TASKS)}")
    if args.absorber not in ("thin", "twolevel", "doppler", "none"):
        raise UsageError(f"unknown absorber {args.absorber!r}; choose thin, twolevel, doppler or none")
    if args.rule not in ("probe", "exact"):
        raise UsageError(f"unknown rule {args.rule!r}; choose probe or exact")
    if args.loss not in ("mse", "ce"):
        raise UsageError(f"unknown loss {args.loss!r}; choose mse or ce")
    if args.optimizer not in ("adam", "sgd"):
        raise UsageError(f"unknown optimizer {args.optimizer!r}; choose adam or sgd")
    for name in ("alpha0", "i_sat"):
        v = getattr(args, name)
        if not math.isfinite(v) or v < 0 or (name == "i_sat" and v == 0):
            raise UsageError(f"--{name.replace('_', '-')} must be a finite number "
                             f"{'> 0' if name == 'i_sat' else '>= 0'}, got {v}")
    d = TASK_DEFAULTS[args.task]
    s = {
        "system": args.system, "task": args.task, "absorber": args.absorber, "alpha0": args.alpha0,
        "i_sat": args.i_sat, "rule": args.rule, "loss": args.loss, "optimizer": args.optimizer,
        "epochs": d["epochs"] if args.epochs is None else args.epochs,
        "batch": d["batch"] if args.batch is None else args.batch,
        "lr": d["lr"] if args.lr is None else args.lr,
        "init_scale": d["init_scale"] if args.init_scale is None else args.init_scale,
        "seed": args.seed, "target": 1.0 if getattr(args, "target", None) is None else float(args.target),
    }
    if not (math.isfinite(s["target"]) and s["target"] > 0):
        raise UsageError(f"--target must be a positive amplitude, got {s['target']}")
    s["val_fraction"] = check_val_fraction(getattr(args, "val_fraction", 0.0))
    s["lr_schedule"] = getattr(args, "lr_schedule", None) or "constant"
    from optwin.commands.restart_runs import check_restarts
    s["restarts"] = check_restarts(getattr(args, "restarts", 1), s["val_fraction"])
    if s["epochs"] < 0 or s["batch"] <= 0 or not s["lr"] > 0 or not s["init_scale"] > 0:
        raise UsageError("--epochs must be >= 0, --batch > 0, --lr > 0 and --init-scale > 0")
    if args.layers:
        try:
            s["layers"] = [int(v) for v in args.layers.split(",")]
        except ValueError:
            raise UsageError(f"--layers must be comma-separated integers, got {args.layers!r}") from None
        if len(s["layers"]) < 2 or min(s["layers"]) <= 0:
            raise UsageError(f"--layers needs >= 2 positive sizes (input,...,output), got {args.layers!r}")
    else:
        s["layers"] = None  # filled in once the task's size is known
    return s


def check_val_fraction(value) -> float:
    """--val-fraction as a float in [0, 0.9] (UsageError otherwise)."""
    value = 0.0 if value is None else float(value)
    if not (math.isfinite(value) and 0.0 <= value <= 0.9):
        raise UsageError(f"--val-fraction must be a share of the training samples in [0, 0.9], got {value}")
    return value


def load_task_for(settings: dict, args):
    from twin.tasks import load_task
    try:
        task = load_task(settings["task"], seed=settings["seed"], n_samples=args.n_samples,
                         limit_train=args.limit_train)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if settings["layers"] is None:
        settings["layers"] = [task.n_features] + TASK_DEFAULTS[settings["task"]]["hidden"] + [task.n_classes]
    layers = settings["layers"]
    if layers[0] != task.n_features or layers[-1] != task.n_classes:
        raise UsageError(f"--layers {','.join(map(str, layers))} does not fit task {task.name!r}: it has "
                         f"{task.n_features} inputs and {task.n_classes} classes")
    return task


def build_twin(settings: dict, **network_options):
    """Twin network for resolved ``settings``; ``network_options`` (e.g. ``imperfections``,
    ``probe_strength``, ``update``) go to :class:`twin.network.OpticalNetwork` unchanged."""
    from twin.network import OpticalNetwork
    absorber = None if settings["absorber"] == "none" else settings["absorber"]
    if absorber is not None:
        from twin.absorber import make_absorber
        absorber = make_absorber(absorber, alpha0=settings["alpha0"], i_sat=settings["i_sat"])
    return OpticalNetwork(settings["layers"], absorber=absorber, rule=settings["rule"],
                          init_scale=settings["init_scale"], seed=settings["seed"], **network_options)


def run(args) -> int:
    """``optwin train``: check ``--out`` before any work, hold its lock while training."""
    if not args.out:
        if args.force:
            raise UsageError("--force replaces an existing --out run file; give --out")
        return _run(args)
    from optwin.outputs import RUN, guard_output, output_lock
    guard_output(args.out, RUN, force=args.force, resume=args.resume, flag="--out", resumable=True)
    with output_lock(args.out):
        return _run(args)


def _run(args) -> int:
    if args.system != "twin":
        from optwin.workflows import bench_training  # hardware-in-the-loop modes
        return bench_training.run_cli(args)
    if args.rule is None:
        args.rule = "probe"
    if args.drift_watch:
        raise UsageError("--drift-watch needs a bench in the loop (--system bench --mode hybrid or optical)")
    from twin.optim import make_optimizer

    settings = resolve_settings(args)
    task = load_task_for(settings, args)
    task, validation = task.split_validation(settings["val_fraction"])
    chosen = None
    if settings["restarts"] > 1:
        from optwin.commands.restart_runs import run_restarts
        chosen, seconds = run_restarts(lambda s: build_twin(dict(settings, seed=s)), task,
                                       lambda: make_optimizer(settings["optimizer"], settings["lr"]), settings,
                                       validation, out=args.out, saved=load_for_resume(args, settings),
                                       progress=not (args.json or args.no_progress) and sys.stderr.isatty())
        net, history = chosen.system, chosen.history
    else:
        net = build_twin(settings)
        optimizer = make_optimizer(settings["optimizer"], settings["lr"])
        history, seconds = train_with_checkpoints(net, task, optimizer, settings, args, validation)
    result = summarise(history, settings, seconds, len(task.x_train))
    if chosen is not None:
        result.update(restarts=settings["restarts"], restart=chosen.index,
                      restart_val_accuracy=chosen.val_accuracy)
    if validation is not None:        # the kept weights' test accuracy (not the last epoch's)
        from twin.training import evaluate
        result["test_accuracy"] = evaluate(net, task.x_test, task.y_test, task.n_classes, settings["loss"],
                                           target=settings["target"])[1]
        result["selected_epoch"] = history.selected_epoch
        result["n_validation"] = len(validation[0])
    if args.out:
        result["out"] = str(args.out)
    print_result(result, args.json)
    return 0


def train_with_checkpoints(system, task, optimizer, settings: dict, args, validation=None):
    """Train ``system``; with --out, checkpoint atomically after every epoch; with --resume,
    continue from the checkpoint in --out (weights, optimizer state, curves, epoch).
    With ``validation`` (x, y) the run keeps its best validation epoch (early stopping); the
    checkpoints carry that epoch's weights, so a resumed run still knows it."""
    from twin.training import History, train

    start, history = 0, None
    saved = load_for_resume(args, settings)
    if saved is not None:
        if int(saved["settings"].get("restarts", 1)) > 1:
            raise UsageError(f"--resume: {args.out} was trained with --restarts "
                             f"{saved['settings']['restarts']}; give it again")
        system.set_weights(saved["extra_weights"].get("latest", saved["weights"]))
        if saved["optimizer"]:
            optimizer.load_state(saved["optimizer"])
        history = History(**{k: list(v) for k, v in saved["curves"].items()})
        start = len(history.epoch)
    seconds_before = sum(history.seconds) if history else 0.0
    kept = KeptWeights(system.get_weights(), saved) if validation is not None else None

    def checkpoint(epoch, hist, final=False):
        if kept is not None and not final:
            kept.observe(epoch, hist, system.get_weights())
        if args.out:
            from optwin.runfile import save_run
            extra = {"epochs_done": epoch, **(kept.settings(hist) if kept is not None else {})}
            save_run(args.out, system.get_weights(), dict(settings, **extra),
                     hist.as_dict(), optimizer.state(), extra_weights=kept.weights if kept is not None else None)

    t0 = time.perf_counter()
    try:
        history = train(system, task, optimizer, epochs=settings["epochs"], batch=settings["batch"],
                        loss=settings["loss"], seed=settings["seed"], start_epoch=start, history=history,
                        target=settings.get("target", 1.0), validation=validation,
                        lr_schedule=settings.get("lr_schedule", "constant"), keep_best=kept is not None,
                        best=kept.best if kept is not None else None,
                        on_epoch_end=checkpoint,
                        progress=not (args.json or args.no_progress) and sys.stderr.isatty())
    except FloatingPointError as exc:
        raise UsageError(str(exc)) from None
    if args.out and (start >= settings["epochs"] or validation is not None):
        checkpoint(len(history.epoch), history, final=True)   # with early stopping: the kept weights
    return history, time.perf_counter() - t0 + seconds_before


def load_for_resume(args, settings: dict) -> dict | None:
    """The run file to continue (--resume with an existing --out), checked against ``settings``."""
    if not args.resume:
        return None
    if not args.out:
        raise UsageError("--resume needs --out (the run file to continue)")
    from pathlib import Path
    if not Path(args.out).exists():
        return None
    from optwin.runfile import load_run
    saved = load_run(args.out)
    for key in ("task", "layers", "absorber", "alpha0", "rule", "seed", "batch", "lr", "system", "val_fraction",
                "optimizer", "loss", "init_scale", "target", "lr_schedule"):
        if key == "lr_schedule" and saved["settings"].get(key, "constant") != settings.get(key, "constant"):
            raise UsageError(f"--resume: {args.out} was trained with lr_schedule="
                             f"{saved['settings'].get(key, 'constant')!r}, now {settings.get(key)!r}; use the same "
                             f"settings or a new --out")
        if key in saved["settings"] and saved["settings"][key] != settings.get(key):
            raise UsageError(f"--resume: {args.out} was trained with {key}={saved['settings'][key]!r}, "
                             f"now {key}={settings.get(key)!r}; use the same settings or a new --out")
    check_schedule_epochs(saved["settings"], settings, args.out)
    return saved


def check_schedule_epochs(saved: dict, settings: dict, path) -> None:
    """A cosine schedule spans --epochs: resuming it with other --epochs would change its rates."""
    if settings.get("lr_schedule") == "cosine" and int(saved.get("epochs", settings["epochs"])) != settings["epochs"]:
        raise UsageError(f"--resume: {path} runs a cosine schedule over {saved.get('epochs')} epochs; give "
                         f"--epochs {saved.get('epochs')} (or train a new --out)")


class KeptWeights:
    """Early stopping across checkpoints: the best validation epoch's weights and the last
    epoch's travel in every run file (``/checkpoint/weights/{best,latest}``), so that
    ``--resume`` continues exactly.  ``saved``: the run file being resumed (or None)."""

    def __init__(self, start_weights, saved: dict | None = None):
        st = saved["settings"] if saved else {}
        extra = (saved or {}).get("extra_weights") or {}
        # (val accuracy, epoch, weights) of the resumed run's best epoch, for twin.training.train
        self.best = None
        if "best" in extra and st.get("selected_epoch") is not None:
            self.best = (float(st["selected_val_accuracy"]), int(st["selected_epoch"]), extra["best"])
        now = [np.array(w) for w in start_weights]
        self.weights = {"best": now if self.best is None else self.best[2], "latest": now}

    def observe(self, epoch: int, hist, weights) -> None:
        """After an epoch: keep its weights as the latest, and as the best when it is."""
        self.weights["latest"] = [np.array(w) for w in weights]
        if hist.selected_epoch == epoch:
            self.weights["best"] = self.weights["latest"]

    @staticmethod
    def settings(hist) -> dict:
        """The run-file settings that record the selection."""
        return {"selected_epoch": hist.selected_epoch, "selected_val_accuracy": hist.selected_val_accuracy}


def summarise(history, settings: dict, seconds: float, n_train: int) -> dict:
    epochs_run = len(history.epoch)
    seconds = seconds or float("nan")
    return {
        "system": settings["system"], "task": settings["task"], "layers": settings["layers"],
        "absorber": settings["absorber"], "alpha0": settings["alpha0"], "rule": settings["rule"],
        "test_accuracy": history.test_accuracy[-1] if epochs_run else float("nan"),
        "train_accuracy": history.train_accuracy[-1] if epochs_run else float("nan"),
        "final_loss": history.train_loss[-1] if epochs_run else float("nan"),
        "epochs": epochs_run, "seconds": seconds,
        "samples_per_second": epochs_run * n_train / seconds if seconds > 0 else float("nan"),
    }


def print_result(result: dict, as_json: bool) -> None:
    if as_json:
        from optwin.outputs import print_json
        print_json(result)
        return
    print(f"{result['task']}: layers {result['layers']}, {result['absorber']} absorber "
          f"(alpha0={result['alpha0']}), rule {result['rule']}")
    print(f"  {result['epochs']} epochs in {result['seconds']:.1f} s "
          f"({result['samples_per_second']:.0f} samples/s)")
    print(f"  train accuracy {result['train_accuracy']:.4f}, test accuracy {result['test_accuracy']:.4f}, "
          f"final loss {result['final_loss']:.4g}")
    if result.get("out"):
        print(f"  saved to {result['out']}")
