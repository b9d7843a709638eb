import gzip

import numpy as np
import pytest

from twin.tasks import load_task, mnist_dir, read_idx


@pytest.mark.parametrize("name", ["moons", "rings", "xor", "digits"])
def test_tasks_are_seeded_scaled_and_split(name):
    a = load_task(name, seed=4)
    b = load_task(name, seed=4)
    c = load_task(name, seed=5)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    assert a.x_train.min() >= 0 and a.x_train.max() <= 1
    assert a.x_train.max() > 0.99 and a.x_train.min() < 0.01
    assert set(np.unique(a.y_train)) == set(range(a.n_classes))
    n = len(a.x_train) + len(a.x_test)
    assert len(a.x_test) == pytest.approx(0.25 * n, abs=1)


def test_toy_task_geometry():
    rings = load_task("rings", seed=0, noise=0.0, input_range=(-1, 1))
    # before scaling radii are 1 and 0.5: after min-max scaling to [-1, 1] they stay concentric
    r = np.hypot(*rings.x_train.T)
    assert np.all(r[rings.y_train == 1] < 0.6) and np.all(r[rings.y_train == 0] > 0.9)
    xor = load_task("xor", seed=0, noise=0.0, input_range=(-1, 1))
    s = np.sign(xor.x_train)
    np.testing.assert_array_equal(xor.y_train, (s[:, 0] != s[:, 1]).astype(int))


def test_mnist_from_idx_files():
    pytest.importorskip("numpy")
    try:
        mnist_dir()
    except ValueError as exc:
        pytest.skip(str(exc))
    t = load_task("mnist", limit_train=500, limit_test=100)
    assert t.x_train.shape == (500, 784) and t.x_test.shape == (100, 784)
    assert 0 <= t.x_train.min() and t.x_train.max() <= 1
    assert set(np.unique(t.y_train)) == set(range(10))
    # float32 fields: the 8-bit pixels over 255, to float32 rounding; other ranges map linearly
    assert t.x_train.dtype == np.float32
    raw = read_idx(mnist_dir() / "train-images-idx3-ubyte.gz")[:500].reshape(500, 784)
    np.testing.assert_allclose(t.x_train, raw / 255.0, rtol=6e-8, atol=0)
    shifted = load_task("mnist", limit_train=50, limit_test=10, input_range=(0.2, 0.7))
    np.testing.assert_allclose(shifted.x_train, 0.2 + 0.5 * raw[:50] / 255.0, rtol=2e-7)


def test_idx_reader_errors(tmp_path):
    good = tmp_path / "a.idx.gz"
    data = bytes([0, 0, 0x08, 2]) + (2).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes(range(6))
    good.write_bytes(gzip.compress(data))
    np.testing.assert_array_equal(read_idx(good), np.arange(6).reshape(2, 3))
    short = tmp_path / "b.idx"
    short.write_bytes(data[:-2])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(short)
    bad = tmp_path / "c.idx"
    bad.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(bad)


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        load_task("cifar")


def test_with_outputs_pads_classes_for_wider_networks():
    from twin.losses import one_hot
    task = load_task("moons", seed=1, n_samples=100)
    wide = task.with_outputs(3)
    assert wide.n_classes == 3 and wide.x_train is task.x_train
    targets = one_hot(wide.y_train, wide.n_classes)
    assert targets.shape == (len(task.y_train), 3) and np.all(targets[:, 2] == 0)
    with pytest.raises(ValueError, match="cannot represent"):
        task.with_outputs(1)


def test_validation_split_holds_out_the_last_training_samples():
    task = load_task("moons", seed=0, n_samples=400, test_fraction=0.25)
    kept, (xv, yv) = task.split_validation(0.2)
    assert len(xv) == len(yv) == 60 and len(kept.x_train) == 240
    np.testing.assert_array_equal(np.concatenate([kept.x_train, xv]), task.x_train)
    np.testing.assert_array_equal(np.concatenate([kept.y_train, yv]), task.y_train)
    np.testing.assert_array_equal(kept.x_test, task.x_test)
    assert task.split_validation(0.0) == (task, None)
    with pytest.raises(ValueError, match="validation fraction"):
        task.split_validation(1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finds_non_finite_features(bad):
    t = load_task("moons", n_samples=40)
    t.check()
    x = t.x_train.copy()
    x[3, 1] = bad
    with pytest.raises(ValueError, match="x_train contains NaN or inf"):
        type(t)(t.name, x, t.y_train, t.x_test, t.y_test, 2, t.input_range).check()
