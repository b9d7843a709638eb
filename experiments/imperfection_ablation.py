"""What each calibrated imperfection costs in accuracy: the calibrated twin with one part removed.

Trains, for every task and seed, the calibrated twin of a calibration file (all fitted MVM
imperfections), the same twin with one imperfection removed at a time (illumination gain map,
stray field, output crosstalk, readout noise, SLM amplitude quantisation), with all of them
removed (perfect MVMs: the ``ideal`` reference of ``experiments/bench_modes.py``), always with
the calibrated cell law and the SLMs' weight range.  It answers whether a gap between bench
training and ``ideal`` is the training method's or the hardware's: a network whose own
imperfections cap its accuracy cannot be trained past that cap by any mode.

    python experiments/imperfection_ablation.py --cal cal.h5 [--tasks rings,xor] [--seeds 0,1,2,3]

Writes ``<out>.json`` and ``<out>.md`` (default ``docs/imperfection_ablation``).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# variant -> the Imperfections fields it resets (None: keep everything)
VARIANTS = {
    "calibrated": (),
    "no_gain_map": ("gain", "backward_gain"),
    "no_stray_field": ("stray",),
    "no_crosstalk": ("crosstalk",),
    "no_readout_noise": ("readout_noise",),
    "no_quantisation": ("transfer", "levels"),
    "perfect_mvms": ("gain", "backward_gain", "stray", "crosstalk", "readout_noise", "transfer", "levels"),
}


def variant_network(cal, sizes, variant: str, seed: int, init_scale: float = 3.0):
    """The calibrated twin (exact rule) with the imperfections of ``variant`` removed."""
    from optwin.workflows.from_calibration import twin_from_calibration
    from twin.network import OpticalNetwork
    full = twin_from_calibration(cal, sizes, rule="exact", seed=seed, init_scale=init_scale)
    blank = {"readout_noise": 0.0}
    imps = [dataclasses.replace(layer.imperfections, **{f: blank.get(f) for f in VARIANTS[variant]})
            for layer in full.layers]
    return OpticalNetwork(sizes, absorber=full.absorber, rule="exact", imperfections=imps,
                          weights=[np.array(w) for w in full.get_weights()])


def main(argv=None):
    from optwin.workflows.from_calibration import load_calibration
    from twin.optim import Adam
    from twin.tasks import load_task
    from twin.training import evaluate, train

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cal", required=True, help="calibration file (optwin calibrate)")
    p.add_argument("--tasks", default="moons,rings,xor")
    p.add_argument("--seeds", default="0,1,2,3")
    p.add_argument("--epochs", type=int, default=400)
    p.add_argument("--lr", type=float, default=5e-3, help="Adam learning rate")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--target", type=float, default=0.3, help="one-hot target amplitude")
    p.add_argument("--n-samples", type=int, default=1200)
    p.add_argument("--test-fraction", type=float, default=0.625)
    p.add_argument("--out", default=str(ROOT / "docs" / "imperfection_ablation"))
    a = p.parse_args(argv)
    cal = load_calibration(a.cal)
    mvm = cal.fits["mvm1"].arrays["gain"]
    sizes = [int(mvm.shape[1]), int(mvm.shape[0]), int(cal.fits["mvm2"].arrays["gain"].shape[0])]
    t0 = time.perf_counter()
    rows = []
    for task_name in a.tasks.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            task = load_task(task_name, seed=seed, n_samples=a.n_samples,
                             test_fraction=a.test_fraction).with_outputs(sizes[-1])
            row = {"task": task_name, "seed": seed}
            for variant in VARIANTS:
                net = variant_network(cal, sizes, variant, seed)
                train(net, task, Adam(a.lr), epochs=a.epochs, batch=a.batch, seed=seed, target=a.target)
                row[variant] = evaluate(net, task.x_test, task.y_test, task.n_classes,
                                        rng=np.random.default_rng([seed, 99]))[1]
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
            rows.append(row)
    means = []
    for task_name in a.tasks.split(","):
        rs = [r for r in rows if r["task"] == task_name]
        means.append({"task": task_name, "seed": f"mean of {len(rs)}",
                      **{v: float(np.mean([r[v] for r in rs])) for v in VARIANTS}})
    settings = {k: getattr(a, k) for k in ("cal", "tasks", "seeds", "epochs", "lr", "batch", "target",
                                           "n_samples", "test_fraction")}
    Path(a.out + ".json").write_text(json.dumps({"settings": settings, "sizes": sizes, "rows": rows,
                                                 "means": means, "seconds": time.perf_counter() - t0}, indent=1))
    head = "| task | seed | " + " | ".join(v.replace("_", " ") for v in VARIANTS) + " |"
    lines = [head, "|" + "---|" * (2 + len(VARIANTS))]
    for r in means + rows:
        lines.append(f"| {r['task']} | {r['seed']} | " + " | ".join(f"{r[v]:.3f}" for v in VARIANTS) + " |")
    text = (f"Test accuracy of the calibrated twin (sizes {sizes}) with one imperfection removed at a time.\n\n"
            f"Settings: {json.dumps(settings)}\n\n" + "\n".join(lines) + "\n")
    Path(a.out + ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
