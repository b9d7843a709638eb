"""Does each SLM's settle time cover what the camera really sees?  (stale-frame check)

:class:`hwio.devices.Camera.grab` returns a frame whose *timestamp* follows the last SLM
update plus its settle time.  That cannot tell whether the frame shows the new SLM frame: a
display pipeline (video link, vsync, panel buffering) can show an update later than the
settle time says, and a software-triggered camera then images the old scene with a new
timestamp.  :func:`check_settle` looks at the images: per physical SLM it

1. shows two frames A (uniform full level) and B (checkerboard of full and half level),
   each held ``hold_s`` (long), and keeps one reference image of each per camera (plus a
   second A to know the frame-to-frame noise); a camera where A and B do not differ clearly
   does not see that SLM and is not used for it;
2. updates A -> B -> A ... (``2 n_toggles`` updates, each after the previous frame was held
   ``hold_s``) and grabs right after each update (the bench's own settle time); a frame
   closer to the reference of the *previous* frame is stale;
3. on a stale frame, measures how long the new frame takes to appear (grabbing until it
   does) and raises :class:`SettleTimeError` with that latency and the setting to change.

The input encoder is held at full level (light on) while other panels are checked.  Every
panel gets its earlier frame back at the end.  Cost: about ``(1 + 2 n_toggles) hold_s`` and a
few frames per physical SLM.
"""
from __future__ import annotations

import numpy as np

from hwio.devices import SLM, Camera, DeviceError

__all__ = ["check_settle", "SettleTimeError"]


class SettleTimeError(DeviceError):
    """Frames grabbed after an SLM update still show the previous SLM frame (settle time too short)."""


def _frames(slm: SLM) -> tuple[np.ndarray, np.ndarray]:
    top = slm.max_level
    a = np.full(slm.shape, top, slm.level_dtype)
    b = a.copy()
    rows, cols = np.indices(slm.shape)
    b[(rows + cols) % 2 == 1] = top - (top + 1) // 2
    return a, b


def _distance(x: np.ndarray, y: np.ndarray) -> float:
    """Mean squared difference of two images (ADU^2): noise adds a constant, a changed scene its energy."""
    d = x.astype(np.float64) - y.astype(np.float64)
    return float(np.mean(d * d))


def _shows(image: np.ndarray, refs, k: int) -> bool:
    """Whether ``image`` is closer to reference ``refs[k]`` than to the other one."""
    return _distance(image, refs[k]) < _distance(image, refs[1 - k])


def _physical(bench):
    """(physical SLMs, physical cameras) of an opened bench, by name."""
    slms = {n: d for n, d in bench.slms.items() if bench.region_of(n) is None}
    cams = {n: d for n, d in bench.cameras.items() if bench.region_of(n) is None}
    for n, d in bench.physical.items():
        (slms if isinstance(d, SLM) else cams if isinstance(d, Camera) else {})[n] = d
    return slms, cams


def check_settle(bench, *, n_toggles: int = 1, hold_s: float = 0.5, latency_timeout_s: float = 5.0,
                 contrast: float = 2.0) -> dict:
    """Check that frames grabbed after each SLM update show that update; raise when they do not.

    Long only because of its docstring (one line per argument); the code is about 57 lines.

    Parameters
    ----------
    bench : an opened :class:`hwio.bench.Bench` (real devices; on a simulated bench it checks
        the simulator, at the cost of virtual time).
    n_toggles : A -> B -> A cycles per SLM (two updates each, checked on the camera that sees the SLM best).
    hold_s : how long the reference frames are held before their reference images (s); must
        exceed the real latency.
    latency_timeout_s : how long to wait for a new frame to appear when measuring the latency (s).
    contrast : a camera sees an SLM when the mean squared A/B image difference exceeds ``contrast``
        times that of two frames of A (noise alone).

    Returns
    -------
    dict : per SLM ``{"camera": name or None, "settle_time_s", "updates", "stale", "contrast"}``
        (``camera`` None: no camera saw the toggle, the SLM was not checked; ``contrast``: the best
        camera's A/B difference over the noise).

    Raises
    ------
    SettleTimeError : a frame after an update showed the previous frame (message: SLM, camera,
        settle time, measured latency and the bench-file key to raise).
    """
    slms, cams = _physical(bench)
    tl = bench.timeline
    saved = {n: (None if d.last_levels is None else d.last_levels.copy()) for n, d in slms.items()}
    light = bench.slms.get("input")
    report: dict = {}
    try:
        if light is not None:
            light.show(np.full(light.shape, light.max_level, light.level_dtype))
        for name, slm in slms.items():
            a, b = _frames(slm)
            slm.show(b)
            tl.sleep(hold_s)
            ref_b = {c: cam.grab().image for c, cam in cams.items()}
            slm.show(a)
            tl.sleep(hold_s)
            ref_a = {c: cam.grab().image for c, cam in cams.items()}
            again = {c: cam.grab().image for c, cam in cams.items()}
            score = {c: _distance(ref_a[c], ref_b[c]) / max(_distance(ref_a[c], again[c]), 1e-9) for c in cams}
            seen = [c for c in cams if score[c] > contrast and _distance(ref_a[c], ref_b[c]) > 0]
            entry = {"camera": max(seen, key=score.get) if seen else None, "settle_time_s": slm.settle_time_s,
                     "updates": 0, "stale": 0, "contrast": round(max(score.values(), default=0.0), 3)}
            report[name] = entry
            if not seen:
                continue
            cam_name = entry["camera"]
            cam = cams[cam_name]
            refs, frames = (ref_a[cam_name], ref_b[cam_name]), (a, b)
            showing = 0                                  # A has been held: the camera sees A
            for k in range(2 * int(n_toggles)):
                if k:
                    tl.sleep(hold_s)                     # the previous frame is on the camera for sure
                showing = 1 - showing
                token = slm.show(frames[showing])
                entry["updates"] += 1
                if _shows(cam.grab().image, refs, showing):
                    continue
                entry["stale"] += 1
                latency = None
                while tl.now() - token.shown_s < latency_timeout_s:
                    frame = cam.grab()
                    if _shows(frame.image, refs, showing):
                        latency = frame.timestamp_s - token.shown_s      # the frame's own (trigger) time
                        break
                seen_after = (f"the camera saw the new frame {latency:.3g} s after the update" if latency is not None
                              else f"the camera did not see the new frame within {latency_timeout_s:g} s")
                need = f"at least {1.5 * latency:.2g} s" if latency is not None else "longer"
                raise SettleTimeError(
                    f"stale frame: {cam_name} grabbed after an update of {name} still showed the previous frame "
                    f"(settle time {slm.settle_time_s:g} s; {seen_after}); set [devices.{name}].settle_time_s to "
                    f"{need} in the bench file")
    finally:
        for name, slm in slms.items():
            try:
                slm.show(saved[name] if saved[name] is not None else np.zeros(slm.shape, slm.level_dtype))
            except DeviceError:
                pass                    # the failure that ended the check is the one to report
    return report
