"""Training speed of the twin against PyTorch networks doing the same maths (prints JSON).

784-W-W-10 on MNIST (synthetic sparse images when the MNIST files are absent), thin
saturable absorber (alpha0 10) after each hidden layer with the probe-transmission
backward rule, MSE against one-hot targets, Adam lr 5e-4, float32.  Timed in one process,
interleaved, the order rotated every repeat, median of repeats:

``twin``          optwin's ``OpticalNetwork.train_step`` (the step ``optwin train`` runs), no imperfection;
``twin_imperfect`` the same with every imperfection hook on: Gaussian illumination, 256-level
                  quantisation, stray field, neighbour crosstalk, readout noise;
``lean_torch``    a bare PyTorch network: one custom autograd function for the absorber
                  (backward = error x probe transmission), ``torch.optim.Adam``, ``F.mse_loss``;
``peer``          with ``--peer DIR``: the reference implementation itself from a checkout of
                  github.com/tomdbar/all-optical-neural-networks (its ``LinNet``, ``SatAbsNL`` and
                  ``Classifier`` training step); never vendored.

``samples_per_s`` / ``ratio`` are per wall-clock second (the headline); ``*_cpu`` per second
of process CPU time (steadier on a shared machine; with several threads, work per sample).
Every system gathers its own batches from the same float32 array in the same order.  The
thread count applies to numpy's BLAS (threadpoolctl) and to torch (``set_num_threads``).
Needs torch (CPU build; ``pip install torch``): without it the script says so and exits 0.

    python benchmarks/twin_vs_peer.py [--quick] [--threads 1 2] [--widths 128 512 2048]
                                      [--batches 64 256] [--repeats 5] [--seconds 1.0] [--peer DIR]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

ALPHA0 = 10.0
LR = 5e-4


def load_data(n_max: int | None = None, seed: int = 0):
    """(x float32 (n, 784), labels int64 (n,), source): MNIST training images, or synthetic ones."""
    from twin.tasks import load_task
    try:
        task = load_task("mnist", limit_train=n_max)
        return task.x_train, task.y_train, "mnist"
    except ValueError:
        rng = np.random.default_rng(seed)
        n = n_max or 60000
        x = (rng.uniform(0, 1, (n, 784)) * (rng.uniform(size=(n, 784)) < 0.2)).astype(np.float32)
        return x, rng.integers(0, 10, n), "synthetic"


def imperfections(sizes, seed=0):
    from twin.layers import Imperfections, gaussian_illumination, neighbour_crosstalk
    rng = np.random.default_rng(seed)
    return [Imperfections(gain=gaussian_illumination(o, i, 1.2), levels=256, w_max=0.5,
                          stray=0.01 * rng.standard_normal(o), crosstalk=neighbour_crosstalk(o, 0.02),
                          readout_noise=1e-3)
            for i, o in zip(sizes[:-1], sizes[1:])]


class TwinRunner:
    """The twin's fused step with the training loop's batch gathering."""

    def __init__(self, sizes, batch, x, targets, imperfect=False, dtype="float32"):
        from twin.network import OpticalNetwork
        from twin.optim import Adam
        self.net = OpticalNetwork(sizes, absorber="thin", alpha0=ALPHA0, rule="probe", dtype=dtype, seed=0,
                                  imperfections=imperfections(sizes) if imperfect else None)
        self.opt = Adam(LR)
        self.x, self.t = x.astype(self.net.dtype, copy=False), targets.astype(self.net.dtype)
        self.xb = np.empty((batch, x.shape[1]), self.net.dtype)
        self.tb = np.empty((batch, targets.shape[1]), self.net.dtype)
        self.rng = np.random.default_rng(1)

    def step(self, idx, labels_np, idx_t, labels_t):
        n = len(idx)
        xb, tb = self.xb[:n], self.tb[:n]
        np.take(self.x, idx, axis=0, out=xb)
        np.take(self.t, idx, axis=0, out=tb)
        lv, out = self.net.train_step(xb, tb, self.opt, "mse", rng=self.rng)
        return lv


class LeanTorch:
    """A bare torch network of the twin's maths: linear layers without bias, the thin absorber
    as one custom autograd function whose backward multiplies the error by the probe
    transmission t(z) = exp(-(alpha0/2) / (1 + z^2)), ``F.mse_loss``, ``torch.optim.Adam``.
    Calling it is one training step on the batch ``idx_t``."""

    def __init__(self, torch, sizes, x_t, t_t, seed=0, weights=None):
        import torch.nn.functional as F

        class SatAbs(torch.autograd.Function):
            @staticmethod
            def forward(ctx, z):
                t = torch.exp(-0.5 * ALPHA0 / (1.0 + z * z))
                ctx.save_for_backward(t)
                return z * t

            @staticmethod
            def backward(ctx, grad):
                (t,) = ctx.saved_tensors
                return grad * t

        self.F, self.SatAbs, self.x_t, self.t_t = F, SatAbs, x_t, t_t
        gen = torch.Generator().manual_seed(seed)
        if weights is None:
            weights = [torch.randn(o, i, generator=gen) / i ** 0.5 for i, o in zip(sizes[:-1], sizes[1:])]
        else:
            weights = [torch.from_numpy(np.array(w, dtype=np.float32)) for w in weights]
        self.weights = [torch.nn.Parameter(w) for w in weights]
        self.opt = torch.optim.Adam(self.weights, lr=LR)

    def loss(self, x, targets):
        a = x
        for k, w in enumerate(self.weights):
            a = self.F.linear(a, w)
            if k < len(self.weights) - 1:
                a = self.SatAbs.apply(a)
        return self.F.mse_loss(a, targets)

    def __call__(self, idx, labels_np, idx_t, labels_t):
        loss = self.loss(self.x_t.index_select(0, idx_t), self.t_t.index_select(0, idx_t))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.detach()


def peer_runner(torch, peer_dir, sizes, x_t):
    """The reference code's own network, loss and training step (Classifier.train_epoch's body)."""
    peer_dir = str(Path(peer_dir).resolve())
    if peer_dir not in sys.path:
        sys.path.insert(0, peer_dir)
    try:
        import torchvision  # noqa: F401
    except ImportError:
        # the reference imports torchvision only for its data loaders, which are not used here
        import types
        sys.modules["torchvision"] = types.ModuleType("torchvision")
    try:
        from src.classifier import Classifier
        from src.network import LinNet
        from src.optical_nls import Encoding, Gradient, SatAbsNL
    except ImportError as exc:
        raise SystemExit(f"--peer {peer_dir}: cannot import the reference code ({exc}); give the root of a "
                         f"checkout of tomdbar/all-optical-neural-networks") from None
    sanl = lambda: SatAbsNL(encoding=Encoding.AMPLITUDE, gradient=Gradient.APPROXIMATE, OD=ALPHA0, I_sat=1)  # noqa
    net = LinNet(n_hid=list(sizes[1:-1]), n_in=sizes[0], n_out=sizes[-1], activation=sanl, output=None)
    save = tempfile.mkdtemp(prefix="peer_bench_")
    with contextlib.redirect_stdout(io.StringIO()):   # it prints its network
        clf = Classifier(net, None, None, learning_rate=LR, loss="mse", weight_range=None,
                         init_weight_std=0.1, save_path=save)

    def step(idx, labels_np, idx_t, labels_t):
        data = x_t.index_select(0, idx_t)
        target = labels_t.index_select(0, idx_t)
        clf.optimizer.zero_grad()
        probs = clf.network(data).squeeze(1)
        loss = clf.loss(probs, target)
        loss.backward()
        clf.optimizer.step()
        return loss

    return step


def samples_per_second(step, order_np, order_t, labels, labels_t, batch, seconds, pos):
    """Steps of ``step`` for at least ``seconds`` (and 3 steps).

    Returns (samples per wall second, samples per process-CPU second, next position).
    """
    n = len(order_np)
    steps, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        if pos + batch > n:
            pos = 0
        step(order_np[pos:pos + batch], labels, order_t[pos:pos + batch], labels_t)
        pos += batch
        steps += 1
        el = time.perf_counter() - t0
        if steps >= 3 and el >= seconds:
            return steps * batch / el, steps * batch / max(time.process_time() - c0, 1e-9), pos


def run(args) -> dict:
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed: pip install torch (CPU build) to run this benchmark"}
    from threadpoolctl import threadpool_limits

    x, labels, source = load_data(args.n_samples)
    targets = np.eye(10, dtype=np.float32)[labels]
    x_t, t_t, labels_t = torch.from_numpy(x), torch.from_numpy(targets), torch.from_numpy(labels.astype(np.int64))
    order = np.random.default_rng(0).permutation(len(x))
    order_t = torch.from_numpy(order.astype(np.int64))
    result = {"data": source, "n_samples": int(len(x)), "dtype": "float32", "alpha0": ALPHA0,
              "repeats": args.repeats, "seconds_per_timing": args.seconds, "torch": torch.__version__,
              "numpy": np.__version__, "imperfect": "gain 1.2 waist, 256 levels, stray, crosstalk 0.02, noise 1e-3",
              "results": []}
    for threads in args.threads:
        torch.set_num_threads(threads)
        with threadpool_limits(limits=threads, user_api="blas"):
            for width in args.widths:
                sizes = [784, width, width, 10]
                for batch in args.batches:
                    runners = {"twin": TwinRunner(sizes, batch, x, targets).step,
                               "twin_imperfect": TwinRunner(sizes, batch, x, targets, imperfect=True).step,
                               "lean_torch": LeanTorch(torch, sizes, x_t, t_t)}
                    if args.peer:
                        runners["peer"] = peer_runner(torch, args.peer, sizes, x_t)
                    names = list(runners)
                    pos = {k: 0 for k in names}
                    for k in names:      # warm-up: first-call allocations, thread pools
                        _, _, pos[k] = samples_per_second(runners[k], order, order_t, labels, labels_t, batch,
                                                       0.2 * args.seconds, pos[k])
                    rates = {k: [] for k in names}
                    cpu = {k: [] for k in names}
                    for r in range(args.repeats):
                        for k in names[r % len(names):] + names[:r % len(names)]:
                            sps, cps, pos[k] = samples_per_second(runners[k], order, order_t, labels, labels_t,
                                                                  batch, args.seconds, pos[k])
                            rates[k].append(sps)
                            cpu[k].append(cps)
                    row = {"threads": threads, "width": width, "batch": batch}
                    for clock, data in (("", rates), ("_cpu", cpu)):
                        med = {k: float(np.median(v)) for k, v in data.items()}
                        ratio = {"twin/lean_torch": med["twin"] / med["lean_torch"],
                                 "twin_imperfect/lean_torch": med["twin_imperfect"] / med["lean_torch"]}
                        if "peer" in med:
                            ratio.update({"twin/peer": med["twin"] / med["peer"],
                                          "twin_imperfect/peer": med["twin_imperfect"] / med["peer"],
                                          "lean_torch/peer": med["lean_torch"] / med["peer"]})
                        row["samples_per_s" + clock] = {k: round(v, 1) for k, v in med.items()}
                        row["ratio" + clock] = {k: round(v, 3) for k, v in ratio.items()}
                    result["results"].append(row)
                    if args.progress:
                        print(json.dumps(row), file=sys.stderr, flush=True)
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short run: 1 repeat of 0.3 s per timing")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--seconds", type=float, default=1.0, help="minimum seconds per timing")
    p.add_argument("--n-samples", type=int, help="use the first N training images (default all)")
    p.add_argument("--peer", metavar="DIR", help="checkout of tomdbar/all-optical-neural-networks to time as well")
    p.add_argument("--progress", action="store_true", help="print each row to stderr as it finishes")
    args = p.parse_args(argv)
    if args.quick:
        args.repeats, args.seconds = 1, 0.3
    if min(args.threads) < 1 or min(args.widths) < 1 or min(args.batches) < 1 or args.repeats < 1:
        p.error("threads, widths, batches and repeats must be positive")
    if args.peer and not Path(args.peer).is_dir():
        p.error(f"--peer {args.peer}: no such directory")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    print(json.dumps(run(args), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
