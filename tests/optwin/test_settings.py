"""One settings object for every training: ranges, refused flags, defaults in --help and in the run file."""
import ast
import re
from pathlib import Path

import numpy as np
import pytest

from optwin.cli import build_parser, main
from optwin.settings import (BENCH_LOOP_DEFAULTS, BENCH_TWIN_DEFAULTS, PRETRAIN_DEFAULTS, TASK_DEFAULTS, Pretrain,
                             SettingsError, TrainSettings)

BENCH = ["train", "--system", "bench", "--bench", "sim", "--cal", "no-such-cal.h5"]   # refused before it is read
TWIN = ["train", "--task", "moons"]


def _refused(capsys, argv, *words):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    for w in words:
        assert w in err, (w, err)


@pytest.mark.parametrize("flag, value, words", [
    ("--epochs", "0", ">= 1"), ("--epochs", "-3", ">= 1"), ("--batch", "-4", ">= 1"), ("--batch", "0", ">= 1"),
    ("--lr", "-0.5", "> 0"), ("--lr", "nan", "> 0"), ("--lr", "0", "> 0"), ("--lr", "inf", "finite"),
    ("--init-scale", "0", "> 0"), ("--target", "-1", "> 0"), ("--val-fraction", "1.5", "[0, 0.9]"),
    ("--seed", "-1", ">= 0"), ("--n-samples", "3", ">= 8"),
])
def test_ranges_are_checked_once_for_twin_and_bench(capsys, flag, value, words):
    for base in (TWIN, BENCH):
        _refused(capsys, [*base, flag, value], flag, words)


@pytest.mark.parametrize("argv, words", [
    (BENCH + ["--layers", "2,8,2"], ("--layers", "bench defines")),
    (BENCH + ["--alpha0", "3"], ("--alpha0", "calibrated cell law")),
    (BENCH + ["--absorber", "thin"], ("--absorber",)),
    (BENCH + ["--i-sat", "2"], ("--i-sat",)),
    (BENCH + ["--loss", "ce"], ("--loss",)),
    (BENCH + ["--optimizer", "sgd"], ("--optimizer",)),
    (BENCH + ["--limit-train", "10"], ("--limit-train",)),
    (TWIN + ["--mode", "optical"], ("--mode", "--system bench")),
    (TWIN + ["--no-drift-watch"], ("--drift-watch",)),
    (TWIN + ["--pretrain-restarts", "2"], ("--pretrain-restarts",)),
    (BENCH + ["--mode", "optical", "--restarts", "4"], ("--restarts", "--pretrain-restarts")),
    (BENCH + ["--mode", "insilico", "--probe-correction"], ("--probe-correction", "optical")),
    (BENCH + ["--mode", "hybrid", "--no-probe-correction"], ("--probe-correction",)),
    (BENCH + ["--mode", "insilico", "--drift-every", "2"], ("--drift-every", "hybrid or optical")),
    (BENCH + ["--mode", "insilico", "--pretrain-epochs", "5"], ("--pretrain",)),
    (BENCH + ["--mode", "ideal", "--rule", "probe"], ("--rule", "exact")),
    (BENCH + ["--no-pretrain", "--pretrain-lr", "0.1"], ("--pretrain-lr", "--no-pretrain")),
    (BENCH + ["--pretrain-restarts", "0"], ("--pretrain-restarts", ">= 1")),
    (BENCH + ["--mode", "telepathy"], ("unknown mode",)),
])
def test_flags_a_mode_does_not_use_are_refused(capsys, argv, words):
    _refused(capsys, argv, *words)


def test_init_from_is_checked_in_every_mode(capsys, tmp_path):
    from optwin.runfile import save_run
    _refused(capsys, [*TWIN, "--init-from", str(tmp_path / "missing.h5")], "no such run file")
    moons = tmp_path / "moons.h5"
    save_run(moons, [np.zeros((32, 2)), np.zeros((2, 32))], {"task": "moons"}, {})
    _refused(capsys, ["train", "--task", "xor", "--epochs", "1", "--init-from", str(moons)], "trained on task 'moons'")
    _refused(capsys, [*TWIN, "--layers", "2,8,2", "--epochs", "1", "--init-from", str(moons)], "shapes")
    _refused(capsys, [*BENCH, "--init-from", str(moons), "--pretrain-restarts", "2"], "--init-from", "--pretrain")
    _refused(capsys, [*TWIN, "--init-from", str(moons), "--restarts", "2", "--val-fraction", "0.2"], "--restarts")


def test_twin_init_from_starts_from_the_given_weights(capsys, tmp_path):
    """One epoch at a vanishing learning rate from a run file's weights ends (almost) on them."""
    from optwin.runfile import load_run
    first, second = tmp_path / "a.h5", tmp_path / "b.h5"
    assert main([*TWIN, "--epochs", "2", "--n-samples", "100", "--out", str(first), "--json"]) == 0
    assert main([*TWIN, "--epochs", "1", "--n-samples", "100", "--lr", "1e-12", "--seed", "5",
                 "--init-from", str(first), "--out", str(second), "--json"]) == 0
    capsys.readouterr()
    a, b = load_run(first), load_run(second)
    for wa, wb in zip(a["weights"], b["weights"]):
        np.testing.assert_allclose(wb, wa, atol=1e-9)
    assert b["settings"]["init_from"] == str(first)


def test_defaults_per_system_and_mode_are_the_recipe():
    twin = TrainSettings.twin("moons")
    assert (twin.epochs, twin.lr, twin.batch, twin.target, twin.rule) == (800, 1e-2, 32, 1.0, "probe")
    kw = {"bench": "sim", "cal": "cal.h5"}
    opt = TrainSettings.on_bench("optical", **kw)
    assert (opt.epochs, opt.lr, opt.lr_schedule, opt.val_fraction, opt.batch) == (10, 0.003, "cosine", 0.2, 16)
    assert opt.pretrain == Pretrain(8, 200, 0.02) and opt.target is None and opt.probe_correction and opt.drift_watch
    hyb = TrainSettings.on_bench("hybrid", **kw)
    assert hyb.pretrain is not None and not hyb.probe_correction
    ins = TrainSettings.on_bench("insilico", **kw)
    assert (ins.epochs, ins.lr, ins.restarts, ins.lr_schedule, ins.pretrain) == (200, 0.02, 8, "constant", None)
    assert TrainSettings.on_bench("optical", pretrain=False, **kw).pretrain is None
    # the pre-training and the twin modes share one recipe
    assert PRETRAIN_DEFAULTS == {k: BENCH_TWIN_DEFAULTS[k] for k in ("restarts", "epochs", "lr")}
    assert BENCH_LOOP_DEFAULTS["epochs"] == 10
    # the record (the run file's /settings) round-trips
    assert TrainSettings.from_record(opt.record()) == opt
    with pytest.raises(ValueError, match="--epochs"):      # a SettingsError is a ValueError for library callers
        opt.replace(epochs=0)
    assert issubclass(SettingsError, ValueError)


def test_every_default_is_in_help():
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    quiet = {"help", "out", "force", "resume", "json", "no_progress", "debug", "bench", "cal"}   # no defaults
    for action in train._actions:
        if action.dest in quiet:
            continue
        assert action.help and "default" in action.help, action.dest
    text = " ".join(train.format_help().split())
    for task, d in TASK_DEFAULTS.items():
        assert f"{task} {d['epochs']}" in text
    for value in (BENCH_LOOP_DEFAULTS["lr"], PRETRAIN_DEFAULTS["restarts"], PRETRAIN_DEFAULTS["epochs"]):
        assert re.search(rf"\b{value:g}\b", text), value


def test_target_is_derived_from_the_calibration(sim_calibration_file):
    """Independent of the twin's law object: the calibrated pump table read at z1 = 1, times w_max2."""
    from calibration.calset import CalibrationSet
    from optwin.workflows.bench_training import target_from_calibration
    cal = CalibrationSet.load(sim_calibration_file)
    fit = cal.fits["absorber"]
    z_in, z_out = np.asarray(fit.arrays["tabulated_z_in"]), np.asarray(fit.arrays["tabulated_z_out"])
    want = cal.fits["mvm2"].quantities["w_max"].value * np.interp(1.0, z_in, z_out)
    assert target_from_calibration(cal) == pytest.approx(want, rel=0.01)
    assert 0.05 < target_from_calibration(cal) < 1.0        # the sim bench's outputs cannot reach 1


def test_no_import_of_the_commands_below_them():
    """Commands parse arguments and call workflows; nothing below imports a command (not even in a function)."""
    root = Path(__file__).resolve().parents[2] / "optwin"
    files = [root / "settings.py", *sorted((root / "workflows").glob("*.py")), *sorted((root / "sweep").glob("*.py"))]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.startswith(("optwin.commands", "optwin.cli")) for n in names), \
                (path.name, names)
