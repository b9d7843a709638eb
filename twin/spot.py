"""Gaussian-spot average of a saturable cell's amplitude transmission.

A Gaussian spot of peak field ``r`` lights the cell; the light that leaves it in the spot's
own (Gaussian) mode sees the mode-projected transmission of the local law ``tau``::

    T_spot(r) = 2 int_0^1 v tau(r v) dv        (v = local field / peak field)

(the field ``r exp(-rho^2)`` times ``tau`` projected on ``exp(-rho^2)``, with ``v =
exp(-rho^2)``).  The integral is a Gauss-Legendre sum on ``[0, 1]``.  The simulated bench,
the absorber fits and the twin's tabulated laws all use :func:`spot_average`.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

import numpy as np

__all__ = ["SPOT_NODES", "unit_nodes", "spot_average"]

#: Gauss-Legendre nodes of the calibration's spot average (exact to ~1e-9 for the twin's laws)
SPOT_NODES = 32


@lru_cache(maxsize=8)
def _nodes(n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    xi, w = np.polynomial.legendre.leggauss(n_nodes)
    v = 0.5 * (xi + 1.0)
    w = 0.5 * w
    v.setflags(write=False)
    w.setflags(write=False)
    return v, w


def unit_nodes(n_nodes: int = SPOT_NODES) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre nodes ``v`` and weights ``w`` on ``[0, 1]`` (read-only arrays).

    Parameters
    ----------
    n_nodes : int
        Number of nodes (>= 1).

    Returns
    -------
    v, w : (n_nodes,) ndarray
        Nodes (dimensionless, in ``(0, 1)``) and weights (summing to 1).
    """
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, (int, np.integer)) or n_nodes < 1:
        raise ValueError(f"n_nodes must be a positive integer, got {n_nodes!r}")
    return _nodes(int(n_nodes))


def spot_average(tau: Callable[[np.ndarray], np.ndarray], r, n_nodes: int = SPOT_NODES) -> np.ndarray:
    """Mode-projected amplitude transmission ``2 int_0^1 v tau(r v) dv`` of a Gaussian spot.

    Parameters
    ----------
    tau : callable
        Local amplitude transmission (dimensionless) at local field magnitudes (normalised
        cell field units, any array shape; called once with shape ``r.shape + (n_nodes,)``).
    r : array_like
        Peak field magnitude(s) of the spot (normalised cell field units, >= 0).
    n_nodes : int
        Gauss-Legendre nodes on ``[0, 1]``.

    Returns
    -------
    ndarray
        Spot-averaged amplitude transmission (dimensionless), shape of ``r``.
    """
    v, w = unit_nodes(n_nodes)
    x = np.asarray(r, dtype=np.float64)[..., None] * v
    return 2.0 * (tau(x) * v) @ w
