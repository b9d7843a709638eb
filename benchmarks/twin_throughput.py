"""Training throughput of the twin vs a bare numpy ReLU MLP of the same shapes (prints JSON).

Ratios are given for wall-clock and for process CPU time; on a shared, busy machine the
CPU-time ratio is the stable one.  Run with OPENBLAS_NUM_THREADS=1 so CPU time is the
work of one core (the script sets it if unset).

The twin runs the probe rule with every imperfection hook on (Gaussian illumination,
256-level quantisation, stray field, output crosstalk, readout noise); the baseline is a
plain numpy MLP (ReLU, MSE, Adam) written as tightly as numpy allows.  Both use float64
and are timed in the same process, interleaved, median of repeats.

    python benchmarks/twin_throughput.py [--repeats 5] [--steps 60]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk  # noqa: E402
from twin.losses import mse_loss  # noqa: E402
from twin.network import OpticalNetwork  # noqa: E402
from twin.optim import Adam  # noqa: E402

SIZES = [784, 128, 128, 10]


def twin_step_fn(batch, rng):
    imps = [Imperfections(gain=gaussian_illumination(o, i, 1.2), levels=256, w_max=0.5,
                          stray=0.01 * rng.standard_normal(o), crosstalk=neighbour_crosstalk(o, 0.02),
                          readout_noise=1e-3)
            for i, o in zip(SIZES[:-1], SIZES[1:])]
    net = OpticalNetwork(SIZES, absorber="thin", alpha0=10.0, rule="probe", imperfections=imps, seed=0,
                         dtype="float64")
    opt = Adam(5e-4)
    noise_rng = np.random.default_rng(1)
    weights = net.get_weights()

    def step(x, y):
        fw = net.forward(x, rng=noise_rng)
        _, d = mse_loss(fw.output, y)
        opt.step(weights, net.backward(d).grads)
    return step


def relu_step_fn(batch, rng):
    ws = [rng.normal(0, 1 / np.sqrt(i), (o, i)) for i, o in zip(SIZES[:-1], SIZES[1:])]
    opt = Adam(5e-4)

    def step(x, y):
        a0 = x
        z1 = a0 @ ws[0].T
        a1 = np.maximum(z1, 0)
        z2 = a1 @ ws[1].T
        a2 = np.maximum(z2, 0)
        z3 = a2 @ ws[2].T
        d3 = (z3 - y) / len(x)
        _ = 0.5 * float(np.einsum("ij,ij->", d3, d3)) * len(x)   # loss value, as training reports it
        d2 = (d3 @ ws[2]) * (z2 > 0)
        d1 = (d2 @ ws[1]) * (z1 > 0)
        opt.step(ws, [d1.T @ a0, d2.T @ a1, d3.T @ a2])
    return step


def samples_per_second(step, data, steps, clock=time.perf_counter):
    x, y = data
    n = len(x)
    b = step.batch
    t0 = clock()
    for k in range(steps):
        i = (k * b) % (n - b)
        step.fn(x[i:i + b], y[i:i + b])
    return steps * b / (clock() - t0)


class Step:
    def __init__(self, fn, batch):
        self.fn, self.batch = fn, batch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=60)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (4096, 784)) * (rng.uniform(size=(4096, 784)) < 0.2)
    y = np.eye(10)[rng.integers(0, 10, 4096)]
    result = {"sizes": SIZES, "dtype": "float64", "repeats": args.repeats, "steps": args.steps}
    for batch in (64, 256):
        twin = Step(twin_step_fn(batch, np.random.default_rng(2)), batch)
        base = Step(relu_step_fn(batch, np.random.default_rng(2)), batch)
        samples_per_second(twin, (x, y), 5)
        samples_per_second(base, (x, y), 5)
        out = {}
        for clock_name, clock in (("wall", time.perf_counter), ("cpu", time.process_time)):
            t, r = [], []
            for _ in range(args.repeats):   # interleaved so drifts hit both alike
                t.append(samples_per_second(twin, (x, y), args.steps, clock))
                r.append(samples_per_second(base, (x, y), args.steps, clock))
            out[f"twin_samples_per_s_{clock_name}"] = float(np.median(t))
            out[f"relu_mlp_samples_per_s_{clock_name}"] = float(np.median(r))
            out[f"ratio_twin_over_relu_{clock_name}"] = float(np.median(t) / np.median(r))
        result[f"batch_{batch}"] = out
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
