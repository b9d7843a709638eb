"""Model-free checks of a fit's data and residuals.

:func:`estimate_noise` estimates each point's noise from the data alone (replicate scatter
and the misfit of a local cubic through the neighbours), so that a model's chi^2 can be
judged; :func:`runs_test_z` asks whether the residual signs alternate as noise would.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize

__all__ = ["RUNS_Z", "estimate_noise", "runs_test_z"]

#: runs-test z below which a fit's residual signs show too few runs (one-sided p = 0.001)
RUNS_Z = -3.09
_REL_FLOOR = 1e-4                         # smallest relative noise an estimate may give


def estimate_noise(x, y):
    """Model-free noise estimate ``sigma_i = sqrt(a^2 + (b y_i)^2)`` from pseudo-residuals.

    Parameters
    ----------
    x, y : input and measured output (any order; repeats allowed).

    Returns
    -------
    (sigma, dof): per-point standard deviations (in the order given) and the number of
    degrees of freedom of the estimate.
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    u = np.log(x) if np.all(x > 0) else x
    ux, inv, counts = np.unique(u, return_inverse=True, return_counts=True)
    ym = np.bincount(inv, weights=y) / counts
    m = ux.size
    e2, yy = [], []
    # replicate scatter (exact, no interpolation)
    for k in np.flatnonzero(counts > 1):
        r = y[inv == k]
        e2.extend(((r - r.mean()) ** 2 * counts[k] / (counts[k] - 1)).tolist())
        yy.extend([ym[k]] * counts[k])
    for i in range(2, m - 2):
        nb = np.array([i - 2, i - 1, i + 1, i + 2])
        xs = ux[nb]
        lag = np.array([np.prod([(ux[i] - xs[q]) / (xs[p] - xs[q]) for q in range(4) if q != p])
                        for p in range(4)])
        pred = float(lag @ ym[nb])
        var_factor = 1.0 / counts[i] + float(np.sum(lag ** 2 / counts[nb]))
        e2.append((ym[i] - pred) ** 2 / var_factor)
        yy.append(ym[i])
    e2 = np.asarray(e2)
    yy = np.asarray(yy)
    if e2.size < 4:
        raise ValueError("too few points to estimate the noise: measure at least 8 input levels "
                         "or pass the measurement's standard errors")
    # sigma^2 = a^2 + b^2 y^2 by maximum likelihood on the pseudo-residuals (Gaussian errors)
    m2 = max(float(np.mean(e2)), 1e-300)

    def nll(th):
        v = np.exp(th[0]) + np.exp(th[1]) * yy ** 2
        return float(np.sum(np.log(v) + e2 / v))

    b0 = math.log(max(float(np.median(e2 / np.maximum(yy ** 2, 1e-300))), 1e-300))
    best = None
    for a0 in np.linspace(math.log(m2) - 30.0, math.log(m2), 7):
        r = minimize(nll, [a0, b0], method="Nelder-Mead",
                     options={"xatol": 1e-6, "fatol": 1e-9, "maxiter": 4000})
        if best is None or r.fun < best.fun:
            best = r
    coef = np.exp(best.x)
    var = coef[0] + coef[1] * y ** 2
    # floor: 0.01 % of the signal (no real power measurement is better), so that exact
    # (simulated) data do not get infinite weights
    floor = np.maximum((_REL_FLOOR * y) ** 2, 1e-12 * max(float(np.max(var)), 1e-300))
    return np.sqrt(np.maximum(var, floor)), max(int(e2.size) - 2, 1)


def runs_test_z(residuals) -> float:
    """Wald-Wolfowitz runs test on residual signs (in the given order); returns z
    (strongly negative = too few runs = systematic misfit)."""
    s = np.sign(np.asarray(residuals, float))
    s = s[s != 0]
    n1, n2 = int(np.sum(s > 0)), int(np.sum(s < 0))
    if n1 == 0 or n2 == 0:
        return -np.inf
    runs = 1 + int(np.sum(s[1:] != s[:-1]))
    n = n1 + n2
    mu = 2.0 * n1 * n2 / n + 1.0
    var = 2.0 * n1 * n2 * (2.0 * n1 * n2 - n) / (n ** 2 * (n - 1))
    return float((runs - mu) / math.sqrt(var)) if var > 0 else 0.0
