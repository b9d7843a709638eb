"""Twin vs bench: the same inputs through both (measurement and statistics; plots live in
``optwin.workflows.compare_plots``).

Per MVM (layer-1 forward, layer-2 forward, layer-2 backward) the bench is measured
``repeats`` times; each MVM is isolated by feeding the twin the bench's *measured* input
of that MVM, so an error in one layer does not leak into the next.  The nrmse of single
shots against the twin's prediction is compared with the bench's own noise floor (the
repeat-to-repeat scatter; for layer 2, whose input is the measured a1, plus that input's
readout noise carried through the twin's matrix): a twin that predicts everything the
bench does systematically reaches nrmse ~ noise floor.
"""
from __future__ import annotations

import numpy as np

from twin.stats import mvm_error_stats

__all__ = ["measure_agreement", "decision_map"]


def measure_agreement(bench_system, twin, n_inputs: int = 48, repeats: int = 3, seed: int = 0) -> dict:
    """Measure MVM and activation agreement of ``bench_system`` and ``twin``.

    Parameters
    ----------
    bench_system : the :class:`hwio.bench_system.BenchSystem` (its current weights are used).
    twin : the twin :class:`twin.network.Network` to compare (gets the bench's weights).
    n_inputs : random inputs (uniform in [0, 1], amplitude fractions) and output errors.
    repeats : bench measurements of each input (the noise floor comes from their scatter).
    seed : seeds the inputs.

    Returns
    -------
    dict
        ``summary`` (nrmse of each MVM and noise floors, relative to the spread of the
        prediction; ``activation_rmse`` in twin field units), ``stats`` (per MVM:
        :func:`twin.stats.mvm_error_stats`) and ``arrays`` (measured and predicted values,
        twin field units; measured ones with a leading ``repeats`` axis).
    """
    rng = np.random.default_rng(seed)
    n_in, n_h, n_out = bench_system.sizes
    x = rng.uniform(0.0, 1.0, (n_inputs, n_in))
    d2 = rng.normal(0.0, 1.0, (n_inputs, n_out))
    fws = [bench_system.forward(x) for _ in range(repeats)]
    z1 = np.stack([f.pre[0] for f in fws])
    a1 = np.stack([f.post[1] for f in fws])
    z2 = np.stack([f.pre[1] for f in fws])
    back = []
    for _ in range(repeats):
        bench_system.forward(x)
        back.append(bench_system.backward(d2).errors[0])
    d1 = np.stack(back)

    x = fws[0].post[0]          # the inputs the bench realised (e.g. DMD fill fractions)
    twin.set_weights(bench_system.get_weights())
    z1_pred = _noiseless(twin.layers[0], x)
    a1_mean = a1.mean(axis=0)
    z2_pred = _noiseless(twin.layers[1], a1_mean)
    from twin.system import ForwardResult
    measured = ForwardResult(pre=[z1.mean(axis=0), z2.mean(axis=0)], post=[x, a1_mean], output=z2.mean(axis=0))
    d1_pred = twin.backward_at(measured, d2).errors[0]
    a1_pred = twin.absorber.transmit(z1.mean(axis=0)) if twin.absorber is not None else z1.mean(axis=0)

    # layer 2's input is the *measured* a1 (mean of the repeats): its readout noise, carried
    # through the realised matrix, is noise of the prediction, part of the floor
    m2 = twin.layers[1].realised_matrix()
    a1_var = a1.var(axis=0, ddof=1).mean(axis=0) / repeats          # per hidden neuron
    z2_pred_var = (m2 ** 2) @ a1_var                                  # per output
    stats = {"mvm1": mvm_error_stats(z1, z1_pred),
             "mvm2_forward": mvm_error_stats(z2, z2_pred, prediction_var=z2_pred_var[None, :]),
             "mvm2_backward": mvm_error_stats(d1, d1_pred), "activation": mvm_error_stats(a1, a1_pred)}
    summary = {
        "mvm1_nrmse": stats["mvm1"]["total_nrmse"],
        "mvm2_forward_nrmse": stats["mvm2_forward"]["total_nrmse"],
        "mvm2_backward_nrmse": stats["mvm2_backward"]["total_nrmse"],
        "noise_floor_nrmse": max(stats[k]["noise_floor_nrmse"] for k in ("mvm1", "mvm2_forward", "mvm2_backward")),
        "noise_floor_nrmse_per_mvm": {k: stats[k]["noise_floor_nrmse"] for k in ("mvm1", "mvm2_forward",
                                                                                 "mvm2_backward")},
        "activation_rmse": float(np.sqrt(np.mean((a1 - a1_pred) ** 2))),
    }
    arrays = {"x": x, "z1": z1, "z1_pred": z1_pred, "a1": a1, "a1_pred": a1_pred, "z2": z2, "z2_pred": z2_pred,
              "d1": d1, "d1_pred": d1_pred}
    return {"summary": summary, "stats": stats, "arrays": arrays}


def _noiseless(layer, a):
    saved = layer.imperfections.readout_noise
    layer.imperfections.readout_noise = 0.0
    try:
        return layer.forward(a, keep=False)
    finally:
        layer.imperfections.readout_noise = saved


def decision_map(system, n_grid: int = 21, lo: float = 0.0, hi: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Class-1 minus class-0 output on an ``n_grid`` x ``n_grid`` grid of 2-D inputs.

    A twin is evaluated without its shot-to-shot noise (the map shows its mean prediction).

    Parameters
    ----------
    system : a two-input, two-output (or more) system (twin or bench).
    n_grid : grid points per axis.
    lo, hi : input range on both axes (amplitude fractions).

    Returns
    -------
    (axis, map)
        The grid axis (n_grid,) and the output difference (n_grid, n_grid) in output units,
        rows along the second input.
    """
    axis = np.linspace(lo, hi, n_grid)
    xx, yy = np.meshgrid(axis, axis)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    layers = getattr(system, "layers", [])
    saved = [layer.imperfections.readout_noise for layer in layers]
    for layer in layers:
        layer.imperfections.readout_noise = 0.0
    try:
        out = system.forward(pts).output
    finally:
        for layer, noise in zip(layers, saved):
            layer.imperfections.readout_noise = noise
    return axis, (out[:, 1] - out[:, 0]).reshape(n_grid, n_grid)
