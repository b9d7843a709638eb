"""Where the in-process (simulated) backends of bench files live.

A bench file names each device's ``backend``.  Real drivers are listed in
:data:`hwio.config.REAL_BACKENDS`; a backend that simulates its devices lives in a package
that registers itself with :func:`hwio.config.register_backend` when it is imported.
:data:`BACKEND_MODULES` says which package that is for each such backend name, so that
:mod:`hwio.config` and :mod:`hwio.bench` can load it by name without importing it
themselves (the simulator sits above them in the layering).
"""
from __future__ import annotations

__all__ = ["BACKEND_MODULES"]

#: backend name -> module whose import registers it
BACKEND_MODULES: dict[str, str] = {
    "sim": "hwio.sim",
}
