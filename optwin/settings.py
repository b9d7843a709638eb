"""Training settings: one validated object from the command line to the workflows and sweeps.

:class:`TrainSettings` holds every setting of a training run, twin or bench.  It is built
once (:meth:`TrainSettings.from_args` for ``optwin train``, :meth:`TrainSettings.twin` for a
sweep point, :meth:`TrainSettings.from_record` for a run file's ``/settings``), validated
once, and recorded whole in the run file (:meth:`TrainSettings.record`).  Defaults:

* ``--system twin``: per task (:data:`TASK_DEFAULTS`), plus :data:`TWIN_DEFAULTS`.
* ``--system bench``: the recipe of the bench-mode table (docs/training_defaults.md):
  :data:`BENCH_TWIN_DEFAULTS` for the modes that train a twin (``insilico``, ``ideal``: 8
  restarts of 200 epochs), :data:`BENCH_LOOP_DEFAULTS` for the modes with the bench in the
  loop (``hybrid``, ``optical``: 10 epochs at lr 0.003 with a cosine decay), which first
  pre-train on the calibrated twin (:class:`Pretrain`) unless ``--init-from`` gives the
  starting weights.  The one-hot target amplitude is derived from the calibration
  (:func:`optwin.workflows.bench_training.target_from_calibration`) unless ``--target`` sets it.

A flag that the chosen system or mode does not use is refused (:class:`SettingsError`),
never ignored.  No setting is silently replaced: an out-of-range value is an error.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from optwin.errors import UsageError

__all__ = ["TrainSettings", "Pretrain", "SettingsError", "TASK_DEFAULTS", "TWIN_DEFAULTS",
           "BENCH_TWIN_DEFAULTS", "BENCH_LOOP_DEFAULTS", "PRETRAIN_DEFAULTS", "MODES", "BENCH_LOOP_MODES",
           "TASKS"]


class SettingsError(UsageError, ValueError):
    """A setting out of range, of the wrong kind, or not used by the chosen system or mode."""


TASKS = ("moons", "rings", "circles", "xor", "digits", "mnist")
MODES = ("insilico", "hybrid", "optical", "ideal")
BENCH_LOOP_MODES = ("hybrid", "optical")

#: per-task twin defaults (hidden-layer widths, Adam rate, epochs, batch, initial weight scale)
TASK_DEFAULTS = {
    "digits": {"hidden": [64], "lr": 2e-3, "epochs": 30, "batch": 64, "init_scale": 1.0},
    "mnist": {"hidden": [128, 128], "lr": 5e-4, "epochs": 10, "batch": 64, "init_scale": 1.0},
    "moons": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "rings": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "circles": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
    "xor": {"hidden": [32], "lr": 1e-2, "epochs": 800, "batch": 32, "init_scale": 3.0},
}
#: twin defaults that do not depend on the task
TWIN_DEFAULTS = {"task": "digits", "absorber": "thin", "alpha0": 10.0, "i_sat": 1.0, "rule": "probe", "loss": "mse",
                 "optimizer": "adam", "target": 1.0, "val_fraction": 0.0, "lr_schedule": "constant", "restarts": 1,
                 "seed": 0}
#: bench, modes that train a twin (insilico, ideal); restarts 1 with --init-from
BENCH_TWIN_DEFAULTS = {"task": "moons", "epochs": 200, "lr": 0.02, "lr_schedule": "constant", "batch": 16,
                       "val_fraction": 0.2, "restarts": 8, "init_scale": 3.0, "rule": "exact", "n_samples": 600,
                       "seed": 0}
#: bench, modes with the bench in the training loop (hybrid, optical)
BENCH_LOOP_DEFAULTS = dict(BENCH_TWIN_DEFAULTS, epochs=10, lr=0.003, lr_schedule="cosine", restarts=1)
#: the in-silico pre-training of hybrid and optical runs without --init-from
PRETRAIN_DEFAULTS = {"restarts": 8, "epochs": 200, "lr": 0.02}

_CHOICES = {"system": ("twin", "bench"), "task": TASKS, "absorber": ("thin", "twolevel", "doppler", "none"),
            "rule": ("probe", "exact"), "loss": ("mse", "ce"), "optimizer": ("adam", "sgd"),
            "lr_schedule": ("constant", "cosine"), "mode": MODES}
# flags only --system twin uses, and why the bench refuses them
_TWIN_ONLY = {"layers": "its layer sizes", "absorber": "its calibrated cell law", "alpha0": "its calibrated cell law",
              "i_sat": "its calibrated cell law", "loss": "MSE against one-hot targets",
              "optimizer": "Adam", "limit_train": "2-D tasks (use --n-samples)"}
_BENCH_ONLY = ("bench", "cal", "mode", "allow_other_bench", "drift_watch", "drift_every", "probe_correction",
               "pretrain", "pretrain_restarts", "pretrain_epochs", "pretrain_lr")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Pretrain:
    """In-silico pre-training on the calibrated twin before a bench-in-the-loop run: the best
    of ``restarts`` initialisations (on the validation samples) of ``epochs`` epochs at Adam
    rate ``lr`` (constant)."""

    restarts: int = PRETRAIN_DEFAULTS["restarts"]
    epochs: int = PRETRAIN_DEFAULTS["epochs"]
    lr: float = PRETRAIN_DEFAULTS["lr"]

    def check(self) -> "Pretrain":
        _check_int("pretrain_restarts", self.restarts, 1)
        _check_int("pretrain_epochs", self.epochs, 1)
        _check_positive("pretrain_lr", self.lr)
        return self


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of one training run (see the module docstring for the defaults).

    Units: ``lr`` per Adam/SGD step; ``target`` and ``init_scale`` in twin field units
    (``init_scale``: initial weights ~ N(0, s^2 / n_in)); ``val_fraction`` a share of the
    training samples; ``alpha0`` the resonant optical depth; ``i_sat`` in normalised
    intensity units.  ``target`` None (bench only) means: derive it from the calibration.
    """

    system: str = "twin"
    task: str = "digits"
    seed: int = 0
    epochs: int = 1
    batch: int = 32
    lr: float = 1e-2
    lr_schedule: str = "constant"
    init_scale: float = 1.0
    target: float | None = 1.0
    val_fraction: float = 0.0
    restarts: int = 1
    rule: str = "probe"
    loss: str = "mse"
    optimizer: str = "adam"
    n_samples: int | None = None
    limit_train: int | None = None
    layers: tuple | None = None
    init_from: str | None = None
    # twin only
    absorber: str | None = "thin"
    alpha0: float | None = 10.0
    i_sat: float | None = 1.0
    # bench only
    mode: str | None = None
    bench: str | None = None
    cal: str | None = None
    allow_other_bench: bool = False
    probe_correction: bool = False
    drift_watch: bool = False
    drift_every: int = 1
    pretrain: Pretrain | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_args(cls, args) -> "TrainSettings":
        """Settings from ``optwin train`` arguments (argparse Namespace; unset flags are None)."""
        get = lambda name: getattr(args, name, None)  # noqa: E731
        system = get("system") or "twin"
        _choice("system", system)
        given = {f for f in (*_TWIN_ONLY, *_BENCH_ONLY) if get(f) is not None}
        if system == "twin":
            extra = [f for f in _BENCH_ONLY if f in given]
            if extra:
                raise SettingsError(f"{_flag(extra[0])} belongs to --system bench; drop it for twin training")
            return cls.twin(task=get("task") or TWIN_DEFAULTS["task"], **{
                k: get(k) for k in ("seed", "epochs", "batch", "lr", "lr_schedule", "init_scale", "target",
                                    "val_fraction", "restarts", "rule", "loss", "optimizer", "n_samples",
                                    "limit_train", "layers", "init_from", "absorber", "alpha0", "i_sat")})
        extra = [f for f in _TWIN_ONLY if f in given]
        if extra:
            raise SettingsError(f"{_flag(extra[0])} is not used with --system bench: the bench defines "
                                f"{_TWIN_ONLY[extra[0]]}; drop it")
        return cls.on_bench(mode=get("mode") or "optical", bench=get("bench"), cal=get("cal"),
                            task=get("task") or BENCH_TWIN_DEFAULTS["task"], **{
                                k: get(k) for k in ("seed", "epochs", "batch", "lr", "lr_schedule", "init_scale",
                                                    "target", "val_fraction", "restarts", "rule", "n_samples",
                                                    "init_from", "allow_other_bench", "probe_correction",
                                                    "drift_watch", "drift_every", "pretrain", "pretrain_restarts",
                                                    "pretrain_epochs", "pretrain_lr")})

    @classmethod
    def twin(cls, task: str, **given) -> "TrainSettings":
        """Twin training of ``task``; every setting not given (or None) takes its default."""
        _choice("task", task)
        d = dict(TWIN_DEFAULTS, **TASK_DEFAULTS[task])
        values = {k: d[k] if given.get(k) is None else given[k] for k in
                  ("seed", "epochs", "batch", "lr", "lr_schedule", "init_scale", "target", "val_fraction",
                   "restarts", "rule", "loss", "optimizer", "absorber", "alpha0", "i_sat")}
        layers = given.get("layers")
        if isinstance(layers, str):
            layers = _parse_layers(layers)
        return cls(system="twin", task=task, n_samples=given.get("n_samples"), limit_train=given.get("limit_train"),
                   layers=tuple(layers) if layers is not None else None, init_from=given.get("init_from"),
                   **values).check()

    @classmethod
    def on_bench(cls, mode: str, bench, cal, task: str = BENCH_TWIN_DEFAULTS["task"], **given) -> "TrainSettings":
        """Bench training in ``mode``; settings not given (or None) take the bench defaults."""
        _choice("mode", mode)
        _choice("task", task)
        if not bench or not cal:
            raise SettingsError("--system bench needs --bench CONFIG and --cal cal.h5")
        loop = mode in BENCH_LOOP_MODES
        d = dict(BENCH_LOOP_DEFAULTS if loop else BENCH_TWIN_DEFAULTS)
        has = {k for k, v in given.items() if v not in (None, False)}
        if given.get("init_from") is not None and not loop:
            d["restarts"] = 1           # start from the given weights, not from fresh ones
        if loop and "restarts" in has:
            raise SettingsError(f"--restarts trains twins; --mode {mode} trains on the bench: its in-silico "
                                f"pre-training takes --pretrain-restarts (or pre-train with --mode insilico "
                                f"--restarts and fine-tune with --init-from)")
        if mode == "ideal" and "rule" in has:
            raise SettingsError("--mode ideal always uses the exact derivative; drop --rule")
        if given.get("probe_correction") is not None and mode != "optical":
            raise SettingsError(f"--probe-correction belongs to --mode optical, not --mode {mode}")
        drift = given.get("drift_watch")
        if not loop:
            for name in ("drift_watch", "drift_every"):
                if given.get(name) not in (None, False) or (name == "drift_watch" and drift is not None):
                    raise SettingsError(f"{_flag(name)} needs the bench in the training loop (--mode hybrid or "
                                        f"optical), not --mode {mode}")
        elif drift is False and given.get("drift_every") is not None:
            raise SettingsError("--drift-every sets how often the drift watch checks; it is off (--no-drift-watch)")
        pretrain = _pretrain_from(mode, given)
        values = {k: d[k] if given.get(k) is None else given[k] for k in
                  ("seed", "epochs", "batch", "lr", "lr_schedule", "init_scale", "val_fraction", "restarts", "rule",
                   "n_samples")}
        if mode == "ideal":
            values["rule"] = "exact"
        bench_s = str(bench)
        if Path(bench_s).exists():
            bench_s = str(Path(bench_s).resolve())
        return cls(system="bench", task=task, mode=mode, bench=bench_s, cal=str(Path(cal).resolve()),
                   target=given.get("target"), init_from=given.get("init_from"),
                   allow_other_bench=bool(given.get("allow_other_bench")),
                   probe_correction=mode == "optical" and given.get("probe_correction") is not False,
                   drift_watch=loop and drift is not False,
                   drift_every=1 if given.get("drift_every") is None else given["drift_every"],
                   pretrain=pretrain, absorber=None, alpha0=None, i_sat=None, **values).check()

    @classmethod
    def from_record(cls, record: dict) -> "TrainSettings":
        """The settings a run file recorded (:meth:`record`); keys it does not know are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        if values.get("layers") is not None:
            values["layers"] = tuple(int(n) for n in values["layers"])
        if isinstance(values.get("pretrain"), dict):
            values["pretrain"] = Pretrain(**values["pretrain"])
        return cls(**values)

    # ------------------------------------------------------------------ use
    def record(self) -> dict:
        """Every setting as JSON-compatible values (the run file's ``/settings``)."""
        out = asdict(self)
        out["layers"] = list(self.layers) if self.layers is not None else None
        return out

    def replace(self, **changes) -> "TrainSettings":
        """A validated copy with ``changes``."""
        if changes.get("layers") is not None:
            changes["layers"] = tuple(int(n) for n in changes["layers"])
        return replace(self, **changes).check()

    @property
    def bench_in_loop(self) -> bool:
        return self.system == "bench" and self.mode in BENCH_LOOP_MODES

    # ------------------------------------------------------------------ validation
    def check(self) -> "TrainSettings":
        """Raise :class:`SettingsError` (one line) on a value out of range; returns self."""
        for name in ("system", "task", "rule", "loss", "optimizer", "lr_schedule"):
            _choice(name, getattr(self, name))
        _check_int("seed", self.seed, 0)
        _check_int("epochs", self.epochs, 1)
        _check_int("batch", self.batch, 1)
        _check_positive("lr", self.lr)
        _check_positive("init_scale", self.init_scale)
        if self.target is not None:
            _check_positive("target", self.target)
        if not (_is_real(self.val_fraction) and 0.0 <= self.val_fraction <= 0.9):
            raise SettingsError(f"--val-fraction must be a share of the training samples in [0, 0.9], "
                                f"got {self.val_fraction}")
        _check_int("restarts", self.restarts, 1)
        if self.restarts > 1 and not self.val_fraction > 0:
            raise SettingsError("--restarts chooses the best initialisation on held-out samples: give "
                                "--val-fraction (e.g. 0.2); the test set never chooses")
        if self.restarts > 1 and self.init_from is not None:
            raise SettingsError("--restarts starts every restart from fresh random weights; drop --init-from "
                                "(or --restarts)")
        if self.n_samples is not None:
            _check_int("n_samples", self.n_samples, 8)
        if self.limit_train is not None:
            _check_int("limit_train", self.limit_train, 1)
        if self.layers is not None and (len(self.layers) < 2 or not all(isinstance(n, int) and n > 0
                                                                        for n in self.layers)):
            raise SettingsError(f"--layers needs >= 2 positive sizes (input,...,output), got "
                                f"{','.join(map(str, self.layers))}")
        if self.init_from is not None and not Path(self.init_from).is_file():
            raise SettingsError(f"--init-from {self.init_from}: no such run file")
        if self.system == "twin":
            _choice("absorber", self.absorber)
            _check_positive("alpha0", self.alpha0, allow_zero=True)
            _check_positive("i_sat", self.i_sat)
        else:
            _choice("mode", self.mode)
            _check_int("drift_every", self.drift_every, 1)
            if self.pretrain is not None:
                self.pretrain.check()
        return self


def _pretrain_from(mode: str, given: dict) -> Pretrain | None:
    """The pre-training of a bench run (None: the run starts from --init-from or random weights)."""
    flags = {k: given.get(k) for k in ("pretrain_restarts", "pretrain_epochs", "pretrain_lr")}
    on = given.get("pretrain")
    if mode not in BENCH_LOOP_MODES:
        if on is not None or any(v is not None for v in flags.values()):
            raise SettingsError(f"--pretrain* belong to --mode hybrid and optical; --mode {mode} trains the twin "
                                f"itself (--restarts, --epochs, --lr)")
        return None
    if given.get("init_from") is not None:
        if on or any(v is not None for v in flags.values()):
            raise SettingsError("--init-from gives the starting weights; drop --pretrain* (or --init-from)")
        return None
    if on is False:
        given_flags = [k for k, v in flags.items() if v is not None]
        if given_flags:
            raise SettingsError(f"{_flag(given_flags[0])} sets the pre-training that --no-pretrain turns off")
        return None
    return Pretrain(**{k.removeprefix("pretrain_"): (PRETRAIN_DEFAULTS[k.removeprefix("pretrain_")] if v is None
                                                        else v) for k, v in flags.items()}).check()


def _parse_layers(text: str) -> tuple:
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise SettingsError(f"--layers must be comma-separated integers, got {text!r}") from None


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _choice(name: str, value) -> None:
    if value not in _CHOICES[name]:
        raise SettingsError(f"unknown {name.replace('_', ' ')} {value!r}; choose one of {', '.join(_CHOICES[name])}")


def _check_int(name: str, value, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise SettingsError(f"{_flag(name)} must be a whole number >= {low}, got {value!r}")


def _check_positive(name: str, value, allow_zero: bool = False) -> None:
    if not (_is_real(value) and (value >= 0 if allow_zero else value > 0)):
        raise SettingsError(f"{_flag(name)} must be a finite number {'>= 0' if allow_zero else '> 0'}, got {value!r}")
