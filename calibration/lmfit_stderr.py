"""Standard errors of lmfit parameters, with a finite-difference fallback.

lmfit gives no standard errors when its covariance estimate fails (a parameter at a bound,
a singular Hessian).  :func:`param_se` then takes them from a finite-difference Jacobian of
the weighted residuals instead, scaled by the reduced chi-square as lmfit scales its own.
"""
from __future__ import annotations

import math

import lmfit
import numpy as np

from calibration.quantities import param_stderr

__all__ = ["fd_stderr", "param_se"]


def fd_stderr(result: lmfit.model.ModelResult) -> dict:
    """Standard errors from a finite-difference Jacobian of the weighted residuals.

    Parameters
    ----------
    result : a finished lmfit model fit.

    Returns
    -------
    dict parameter name -> standard error (units of the parameter; nan where the normal
    matrix cannot be inverted), for the varied parameters, scaled by the reduced chi-square.
    """
    names = [n for n, p in result.params.items() if p.vary]
    p0 = np.array([result.params[n].value for n in names])

    def resid(p):
        pars = result.params.copy()
        for n, v in zip(names, p):
            pars[n].set(value=v)
        return result.model._residual(pars, result.data, result.weights, **result.userkws)

    r0 = resid(p0)
    jac = np.empty((r0.size, p0.size))
    for k in range(p0.size):
        h = 1e-6 * max(abs(p0[k]), 1e-3)
        pp = p0.copy()
        pp[k] += h
        jac[:, k] = (resid(pp) - r0) / h
    dof = max(r0.size - p0.size, 1)
    try:
        cov = np.linalg.pinv(jac.T @ jac) * float(r0 @ r0) / dof
    except np.linalg.LinAlgError:
        return {n: float("nan") for n in names}
    return {n: float(math.sqrt(max(cov[k, k], 0.0))) for k, n in enumerate(names)}


def param_se(result, name: str) -> float:
    """Standard error of parameter ``name`` of an lmfit result (units of the parameter):
    lmfit's own, else :func:`fd_stderr`'s."""
    se = param_stderr(result.params[name])
    if not np.isfinite(se):
        se = fd_stderr(result).get(name, float("nan"))
    return se
