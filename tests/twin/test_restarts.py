"""Best-of-R restarts: the choice is the validation argmax of independently trained runs."""
import numpy as np
import pytest

from twin.network import OpticalNetwork
from twin.optim import SGD, Adam
from twin.restarts import restart_seed, train_restarts
from twin.tasks import load_task
from twin.training import evaluate, train


def _setup():
    task, val = load_task("rings", seed=2, n_samples=360).split_validation(0.25)

    def build(s):
        return OpticalNetwork([2, 6, 2], absorber="thin", alpha0=5.0, rule="exact", init_scale=3.0, seed=s)
    return task, val, build


def test_restart_seeds_are_the_seed_first_then_distinct():
    assert restart_seed(7, 0) == 7
    seeds = {restart_seed(s, r) for s in range(5) for r in range(1, 6)}
    assert len(seeds) == 25 and not seeds & set(range(5))
    with pytest.raises(ValueError):
        restart_seed(0, -1)


def test_chosen_restart_is_the_validation_argmax_of_independent_runs():
    task, val, build = _setup()
    res = train_restarts(build, task, lambda: Adam(2e-2), 4, seed=3, validation=val, epochs=12, batch=16)
    # second method: train every restart seed on its own and score it the same way
    scores = []
    for r in range(4):
        s = restart_seed(3, r)
        net = build(s)
        train(net, task, Adam(2e-2), epochs=12, batch=16, seed=s)
        vl, va = evaluate(net, *val, task.n_classes, rng=np.random.default_rng([s, 12, 3]))
        scores.append((va, -vl))
        if r == res.index:
            for a, b in zip(net.get_weights(), res.system.get_weights()):
                np.testing.assert_array_equal(a, b)
    assert res.val_accuracy == [v for v, _ in scores] and res.val_loss == [-m for _, m in scores]
    assert res.index == max(range(4), key=lambda r: scores[r])
    assert len(set(res.val_accuracy)) > 1          # the restarts really differ: the choice matters
    assert res.seeds == [restart_seed(3, r) for r in range(4)]


def test_one_restart_is_the_plain_run_and_skip_continues_exactly():
    task, val, build = _setup()
    one = train_restarts(build, task, lambda: Adam(2e-2), 1, seed=5, validation=val, epochs=6, batch=16,
                         keep_best=True)
    plain = build(5)
    h = train(plain, task, Adam(2e-2), epochs=6, batch=16, seed=5, validation=val, keep_best=True)
    curves = [{k: v for k, v in hist.as_dict().items() if k != "seconds"} for hist in (one.history, h)]
    assert curves[0] == curves[1] and one.history.selected_epoch == h.selected_epoch
    for a, b in zip(plain.get_weights(), one.system.get_weights()):
        np.testing.assert_array_equal(a, b)
    # 2 restarts, "killed", then continued to 4 == 4 at once
    saved = []
    train_restarts(build, task, lambda: Adam(2e-2), 2, seed=5, validation=val, epochs=6, batch=16,
                   on_restart_end=lambda r, res: saved.append((r + 1, res)))
    done, part = saved[-1]
    cont = train_restarts(build, task, lambda: Adam(2e-2), 4, seed=5, validation=val, epochs=6, batch=16,
                          skip=(done, part))
    full = train_restarts(build, task, lambda: Adam(2e-2), 4, seed=5, validation=val, epochs=6, batch=16)
    assert (cont.index, cont.val_accuracy, cont.val_loss) == (full.index, full.val_accuracy, full.val_loss)
    for a, b in zip(cont.system.get_weights(), full.system.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # the diverging run overflows on purpose
def test_a_diverged_restart_loses_and_bad_arguments_are_refused():
    task, val, build = _setup()
    optimizers = iter([SGD(1e200), Adam(2e-2), Adam(2e-2)])
    res = train_restarts(build, task, lambda: next(optimizers), 3, seed=1, validation=val, epochs=3, batch=16)
    assert np.isnan(res.val_accuracy[0]) and res.index in (1, 2)
    with pytest.raises(FloatingPointError, match="all 2 restarts diverged"):
        train_restarts(build, task, lambda: SGD(1e200), 2, seed=1, validation=val, epochs=3, batch=16)
    with pytest.raises(ValueError, match="validation"):
        train_restarts(build, task, lambda: Adam(1e-2), 2, seed=1, validation=None, epochs=1, batch=16)
    with pytest.raises(ValueError, match=">= 1"):
        train_restarts(build, task, lambda: Adam(1e-2), 0, seed=1, validation=val, epochs=1, batch=16)
