"""Test-only access to a simulated bench's ground truth.  Never import this outside tests.

``truth_of(bench)`` returns the :class:`hwio.sim.truth.Truth` of an opened simulated bench:
``seed``; ``cameras[cam]`` (:class:`~hwio.sim.truth.CameraTruth`: gain_adu_per_e, read_noise_e,
dark_offset_adu, bits, full_well_e, prnu, qe, dark current, psf_sigma_px, ...);
``registration[cam]`` (rotation_deg, scale, offset_px; ``.apply(points)``); ``slms[slm]``
(phase law, crosstalk_px, illumination_waist); ``absorber`` (model, alpha0, i_sat, ...,
``.make(alpha0)``); ``optics`` (layer_gain, probe_gain, output_crosstalk, stray_field,
power_scale, tap); ``lo[cam]``; ``drift``; ``faults``; and ``realised`` (the seeded draws:
stray fields, per-spot LO amplitudes, spot positions on each camera, illumination per
element, phase tables, PRNU and dark-current maps).

``open_with(name_or_path, overrides)`` opens a bench after deep-merging ``overrides`` (a dict
shaped like the TOML, e.g. ``{"truth": {"faults": {"stale_frame_rate": 0.0}}}``; a value of None
removes that key) into its file.
"""
from __future__ import annotations

import copy

from hwio.bench import Bench, open_config
from hwio.config import config_from_document, read_bench_document
from hwio.sim.truth import Truth

__all__ = ["truth_of", "open_with"]


def truth_of(bench: Bench) -> Truth:
    """The ground truth of a simulated bench.

    Parameters
    ----------
    bench : an opened bench with simulated devices.

    Returns
    -------
    Truth : its ground truth (the engine's own object: do not modify it).

    Raises
    ------
    TypeError : the bench has no simulated devices.
    """
    engine = getattr(bench, "_sim", None)
    if engine is None:
        raise TypeError(f"bench {bench.name!r} has no simulated devices, so it has no ground truth")
    return engine.truth


def _merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def open_with(path_or_name, overrides: dict | None = None) -> Bench:
    """Open a bench file with ``overrides`` deep-merged into it (tests: switch faults off, etc.).

    Parameters
    ----------
    path_or_name : a bench TOML file or a built-in bench name.
    overrides : tables shaped like the file; a value of None removes that key.

    Returns
    -------
    Bench : the opened bench.
    """
    doc, path, label = read_bench_document(path_or_name)
    return open_config(config_from_document(_merge(doc, overrides or {}), path, label))
