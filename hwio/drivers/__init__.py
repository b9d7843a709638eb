"""Real hardware backends for :mod:`hwio.devices`.

Each driver subclasses :class:`hwio.devices.SLM` or :class:`hwio.devices.Camera` and
implements only the private hooks (see :mod:`hwio.drivers.template`).  The vendor
libraries are optional (``pip install optwin[hardware]``) and are imported only when a
driver is constructed, so ``import hwio.drivers`` always works.

======================  =================================  =========================
backend name            class                              library
======================  =================================  =========================
``window``              :class:`~.window_slm.WindowSLM`     pyglet (+ mss for read-back)
``pylon``               :class:`~.pylon_camera.PylonCamera`  pypylon
``genicam``             :class:`~.genicam_camera.GenICamCamera`  harvesters + genicam
``opencv``              :class:`~.opencv_camera.OpenCVCamera`  opencv (core dependency)
======================  =================================  =========================

:mod:`~hwio.drivers.template` is the starting point of a new driver.
"""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["BACKENDS", "get_driver", "require", "one_line", "WindowSLM", "PylonCamera",
           "GenICamCamera", "OpenCVCamera"]

#: backend name -> (module, class name); modules import their vendor library lazily.
BACKENDS: dict[str, tuple[str, str]] = {
    "window": ("hwio.drivers.window_slm", "WindowSLM"),
    "pylon": ("hwio.drivers.pylon_camera", "PylonCamera"),
    "genicam": ("hwio.drivers.genicam_camera", "GenICamCamera"),
    "opencv": ("hwio.drivers.opencv_camera", "OpenCVCamera"),
}

_EXTRA = {
    "pyglet": "optwin[hardware]",
    "mss": "optwin[hardware]",
    "pypylon": "optwin[hardware]",
    "harvesters": "optwin[hardware]",
    "genicam": "optwin[hardware]",
    "cv2": "opencv-python-headless",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` or raise an ImportError naming what to install.

    Parameters
    ----------
    module : dotted module name, e.g. ``"pypylon.pylon"``.
    feature : what needs it, used in the message (e.g. ``"PylonCamera"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        top = module.split(".")[0]
        pkg = _EXTRA.get(top, top)
        raise ImportError(f"{feature} needs the '{top}' package, which is not importable ({one_line(exc)}); "
                          f"install it with: pip install {pkg}") from None


def one_line(exc: BaseException) -> str:
    """First line of an exception's text (vendor messages often span several lines)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def get_driver(name: str) -> type:
    """Return the driver class registered under backend ``name`` (see :data:`BACKENDS`)."""
    try:
        module, cls = BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown hardware backend {name!r}; choose one of "
                         f"{', '.join(sorted(BACKENDS))}") from None
    return getattr(importlib.import_module(module), cls)


def __getattr__(attr: str):
    # Lazy access: ``from hwio.drivers import PylonCamera`` imports only that module.
    for module, cls in BACKENDS.values():
        if cls == attr:
            return getattr(importlib.import_module(module), cls)
    raise AttributeError(f"module 'hwio.drivers' has no attribute {attr!r}")
