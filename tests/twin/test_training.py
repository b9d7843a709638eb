"""Training reaches its target accuracies; optimizers match their closed forms."""
import numpy as np
import pytest

from twin.network import OpticalNetwork
from twin.optim import SGD, Adam
from twin.tasks import load_task
from twin.training import train


@pytest.mark.parametrize("name", ["moons", "rings", "xor"])
def test_small_sa_network_learns_toy_tasks_with_probe_rule(name):
    task = load_task(name, seed=0)
    net = OpticalNetwork([2, 32, 2], absorber="thin", alpha0=10.0, rule="probe", init_scale=3.0, seed=0)
    h = train(net, task, Adam(1e-2), epochs=800, batch=32, seed=0)
    assert h.test_accuracy[-1] >= 0.95


def test_digits_probe_and_exact():
    task = load_task("digits", seed=0)
    acc = {}
    for rule in ("probe", "exact"):
        net = OpticalNetwork([64, 64, 10], absorber="thin", alpha0=10.0, rule=rule, seed=0)
        acc[rule] = train(net, task, Adam(2e-3), epochs=30, batch=64, seed=0).test_accuracy[-1]
    assert acc["probe"] >= 0.95
    assert abs(acc["exact"] - acc["probe"]) <= 0.02


def test_training_is_seeded_and_resumable():
    task = load_task("moons", seed=1, n_samples=300)
    def run(epochs, start=0, net=None, opt=None, hist=None):
        net = net or OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, seed=2, init_scale=3.0)
        opt = opt or Adam(1e-2)
        hist = train(net, task, opt, epochs=epochs, batch=16, seed=3, start_epoch=start, history=hist)
        return net, opt, hist
    full, _, hf = run(6)
    part, opt, hp = run(3)
    part, _, hp = run(6, start=3, net=part, opt=opt, hist=hp)
    for a, b in zip(full.get_weights(), part.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert hf.test_accuracy == hp.test_accuracy


def test_adam_first_steps_closed_form():
    p = [np.array([1.0, -2.0])]
    g = [np.array([0.5, -3.0])]
    opt = Adam(lr=0.1)
    opt.step(p, g)
    # first Adam step moves every parameter by lr * sign(g) (up to eps)
    np.testing.assert_allclose(p[0], [0.9, -1.9], rtol=1e-6)
    s = [np.array([1.0])]
    sgd = SGD(lr=0.5, momentum=0.9)
    sgd.step(s, [np.array([1.0])])
    sgd.step(s, [np.array([1.0])])
    np.testing.assert_allclose(s[0], [1.0 - 0.5 - 0.5 * 1.9])


def test_bad_training_arguments():
    task = load_task("moons", n_samples=100)
    net = OpticalNetwork([2, 4, 2])
    with pytest.raises(ValueError, match="loss"):
        train(net, task, Adam(), loss="hinge")
    with pytest.raises(ValueError, match="learning rate"):
        Adam(lr=0)


def test_target_amplitude_sets_the_loss_and_the_trained_output_scale():
    from twin.training import evaluate
    task = load_task("moons", seed=0, n_samples=400)
    net = OpticalNetwork([2, 16, 2], absorber="thin", alpha0=3.0, rule="exact", init_scale=3.0, seed=0)
    out = net.forward(task.x_test).output
    onehot = np.eye(2)[task.y_test]
    for t in (1.0, 0.3):
        want = 0.5 * np.mean(np.sum((out - t * onehot) ** 2, axis=1))
        assert evaluate(net, task.x_test, task.y_test, 2, target=t)[0] == pytest.approx(want, rel=1e-12)
    train(net, task, Adam(1e-2), epochs=150, batch=32, seed=0, target=0.3)
    out = net.forward(task.x_test).output
    right = out[np.arange(len(out)), task.y_test]
    assert np.median(right) == pytest.approx(0.3, abs=0.06)      # trained to the target, not to 1
    with pytest.raises(ValueError, match="target"):
        train(net, task, Adam(1e-2), epochs=1, target=0.0)


def _val_split(task, n_val):
    from twin.tasks import Task
    keep = len(task.x_train) - n_val
    return (Task(task.name, task.x_train[:keep], task.y_train[:keep], task.x_test, task.y_test, task.n_classes,
                 task.input_range), (task.x_train[keep:], task.y_train[keep:]))


def test_keep_best_ends_on_the_best_validation_epoch_of_the_same_run():
    """Early stopping: the kept weights are bit-identical to a run stopped at the selected epoch,
    and score the best validation accuracy (a too-large step size makes later epochs worse)."""
    from twin.training import evaluate
    task, val = _val_split(load_task("rings", seed=4, n_samples=400), 100)

    def run(epochs, keep_best):
        net = OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, rule="exact", seed=1, init_scale=3.0)
        h = train(net, task, Adam(0.3), epochs=epochs, batch=16, seed=5, validation=val, keep_best=keep_best)
        return net, h

    net, h = run(12, True)
    start_acc = evaluate(OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, seed=1, init_scale=3.0),
                         *val, 2)[1]
    scores = [start_acc] + h.val_accuracy
    assert len(h.val_accuracy) == 12
    assert max(scores) > scores[-1]                 # the last epoch is not the best: selection matters
    best = max(scores)
    assert h.selected_epoch == max(i for i, s in enumerate(scores) if s == best)
    assert evaluate(net, *val, 2)[1] == best
    stopped, hs = run(h.selected_epoch, False)
    for a, b in zip(net.get_weights(), stopped.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert hs.selected_epoch is None and "selected_epoch" not in h.as_dict()


def test_validation_arguments_are_checked():
    task = load_task("moons", n_samples=100)
    net = OpticalNetwork([2, 4, 2])
    with pytest.raises(ValueError, match="keep_best needs validation"):
        train(net, task, Adam(1e-2), epochs=1, keep_best=True)
    with pytest.raises(ValueError, match="validation must be"):
        train(net, task, Adam(1e-2), epochs=1, validation=(np.zeros((5, 3)), np.zeros(5, int)))


def test_cosine_schedule_sets_each_epochs_rate_and_resumes_exactly():
    from twin.training import lr_factor
    task = load_task("moons", seed=1, n_samples=200)

    class Spy(Adam):
        def __init__(self, lr):
            super().__init__(lr)
            self.seen = []

        def step(self, params, grads):
            self.seen.append(self.lr)
            super().step(params, grads)

    net = OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, seed=2, init_scale=3.0)
    spy = Spy(0.01)
    train(net, task, spy, epochs=4, batch=50, seed=3, lr_schedule="cosine")
    steps = -(-len(task.x_train) // 50)
    expect = [0.01 * 0.5 * (1 + np.cos(np.pi * e / 4)) for e in range(4) for _ in range(steps)]
    np.testing.assert_allclose(spy.seen, expect, rtol=1e-15)
    assert spy.lr == 0.01 and lr_factor("constant", 3, 4) == 1.0
    # killed after 2 of 5 epochs, then resumed == uninterrupted
    full = OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, seed=2, init_scale=3.0)
    train(full, task, Adam(0.01), epochs=5, batch=16, seed=3, lr_schedule="cosine")
    part = OpticalNetwork([2, 8, 2], absorber="thin", alpha0=5.0, seed=2, init_scale=3.0)
    opt = Adam(0.01)

    def kill(epoch, hist):
        if epoch == 2:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        train(part, task, opt, epochs=5, batch=16, seed=3, lr_schedule="cosine", on_epoch_end=kill)
    assert opt.lr == 0.01                      # the base rate survives the interruption
    train(part, task, opt, epochs=5, batch=16, seed=3, lr_schedule="cosine", start_epoch=2)
    for a, b in zip(full.get_weights(), part.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="lr_schedule"):
        train(part, task, opt, epochs=1, lr_schedule="linear")
