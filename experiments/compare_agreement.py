"""Twin-vs-bench agreement per MVM on the simulated benches (the compare table of docs/results.md).

For each bench: calibrate through the devices (or reuse ``--cal-dir/cal_<bench>.h5``), then run
``optwin compare`` for several seeds (random weights and inputs per seed) and tabulate the
single-shot nrmse of each MVM against the bench's noise floor.

    python experiments/compare_agreement.py [--benches sim,sim_alt] [--seeds 1,2,3,4,5]

Writes ``docs/compare_agreement.md`` and ``.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MVMS = ("mvm1", "mvm2_forward", "mvm2_backward")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benches", default="sim,sim_alt")
    p.add_argument("--seeds", default="1,2,3,4,5")
    p.add_argument("--cal-dir", default="/tmp/optwin_bench_modes")
    p.add_argument("--out", default=str(ROOT / "docs" / "compare_agreement"))
    p.add_argument("--fresh", action="store_true", help="calibrate again even where --cal-dir holds a calibration")
    a = p.parse_args(argv)
    from calibration.run import calibrate_bench
    from hwio.bench import open_bench
    from optwin.workflows.compare import measure_agreement
    from optwin.workflows.from_calibration import bench_system_from_calibration, load_calibration, twin_from_calibration

    rows = []
    for name in a.benches.split(","):
        cal_path = Path(a.cal_dir) / f"cal_{name}.h5"
        with open_bench(name) as bench:
            if cal_path.exists() and not a.fresh:
                print(f"{name}: reusing the calibration {cal_path} (pass --fresh to calibrate again)", flush=True)
                cal = load_calibration(cal_path)
            else:
                cal_path.parent.mkdir(parents=True, exist_ok=True)
                for old in cal_path.parent.glob(cal_path.name + "*"):     # our own earlier calibration
                    old.unlink()
                cal = calibrate_bench(bench, cal_path, progress=False)
            system = bench_system_from_calibration(bench, cal)
            for seed in (int(s) for s in a.seeds.split(",")):
                twin = twin_from_calibration(cal, system.sizes, seed=seed, init_scale=3.0)
                system.set_weights([w.copy() for w in twin.get_weights()])
                s = measure_agreement(system, twin, seed=seed)["summary"]
                floor = s["noise_floor_nrmse_per_mvm"]
                row = {"bench": name, "seed": seed}
                for m in MVMS:
                    row[f"{m}_nrmse"] = s[f"{m}_nrmse"]
                    row[f"{m}_floor"] = floor[m]
                    row[f"{m}_ratio"] = s[f"{m}_nrmse"] / floor[m]
                print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
                rows.append(row)
    lines = ["| bench | seed | " + " | ".join(f"{m} nrmse (floor, ratio)" for m in MVMS) + " |",
             "|" + "---|" * (2 + len(MVMS))]
    for r in rows:
        lines.append(f"| {r['bench']} | {r['seed']} | " + " | ".join(
            f"{r[m + '_nrmse']:.4f} ({r[m + '_floor']:.4f}, {r[m + '_ratio']:.2f})" for m in MVMS) + " |")
    Path(a.out + ".json").write_text(json.dumps(rows, indent=1))
    Path(a.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
