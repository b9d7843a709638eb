"""The simulated backend registers itself: hwio.config and hwio.bench never import the simulator."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

import hwio
import hwio.config as config
from hwio.config import load_bench_config, register_backend, simulated_backend

HWIO = Path(hwio.__file__).resolve().parent


@pytest.mark.parametrize("module", ["config.py", "bench.py"])
def test_config_and_bench_never_import_the_simulator(module):
    tree = ast.parse((HWIO / module).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("hwio.sim")]
    assert "hwio.sim" not in (HWIO / module).read_text()


def test_loading_a_sim_bench_registers_the_backend_in_a_fresh_interpreter():
    code = ("import sys; from hwio.config import load_bench_config, _SIMULATED; "
            "assert 'hwio.sim' not in sys.modules and not _SIMULATED; "
            "cfg = load_bench_config('sim'); "
            "assert 'sim' in _SIMULATED and type(cfg._truth).__module__ == 'hwio.sim.truth'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_unknown_simulated_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="no simulated backend 'emu'"):
        simulated_backend("emu")


def test_a_registered_backend_is_what_the_config_uses(monkeypatch):
    seen = []
    hooks = simulated_backend("sim")

    def parse(table, label, cfg):
        seen.append(label)
        return hooks.parse_truth(table, label, cfg)
    monkeypatch.setitem(config._SIMULATED, "sim", hooks)      # restored after the test
    register_backend("sim", parse_truth=parse, open_engine=hooks.open_engine)
    load_bench_config("sim")
    assert seen == ["sim.toml"]
