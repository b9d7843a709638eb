"""Bench fingerprints: which bench a calibration file belongs to.

A calibration describes one physical bench: its panels' LUTs, its cameras' dark maps and
spot positions, its cell.  Used with another bench it drives the wrong hardware without
any visible error (training then simply learns less).  So ``optwin calibrate`` records the
bench's identity in the file, and every command that drives a bench with a calibration
(``train``, ``compare``, ``push``) compares it with the bench it opened.

The fingerprint holds what identifies hardware and its optical geometry, not settings a
lab changes from run to run (exposures, timeouts, settle times):

* the bench name and network sizes;
* per device: kind, backend, shape (pixels), bit depth, region of a shared device, LO
  channels, and the serial number where the driver reports one (``device.serial``;
  simulated devices report one derived from the simulated hardware, so two simulated
  benches with different hidden truths differ like two real cameras do);
* the SLM block layouts and camera spot layouts;
* ``hash``: SHA-256 (first 16 hex digits) of all of the above, for logs.

Files written before fingerprints were recorded are checked against the fingerprint their
stored bench configuration gives (without serial numbers).  Files made from lab
measurement files alone (``optwin calibrate slm --curve ... --out``) record no bench and
are not checked (a warning says so).
"""
from __future__ import annotations

import hashlib
import json

__all__ = ["FINGERPRINT_VERSION", "bench_fingerprint", "fingerprint_from_config", "fingerprint_of",
           "fingerprint_differences", "check_bench"]

FINGERPRINT_VERSION = 1
#: device settings that identify hardware (exposures, timeouts and settle times do not)
IDENTITY_KEYS = ("kind", "backend", "shape", "bit_depth", "region_of", "region_px", "channels")


def _sizes(config: dict) -> list:
    b = config.get("bench", {})
    if "sizes" in b:
        return [int(s) for s in b["sizes"]]
    return [int(b[k]) for k in ("n_in", "n_hidden", "n_out") if k in b]


def _with_hash(fp: dict) -> dict:
    body = {k: v for k, v in fp.items() if k != "hash"}
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
    return {**body, "hash": digest[:16]}


def fingerprint_from_config(config: dict) -> dict:
    """Fingerprint from a normalised bench configuration (``Bench.config``; no serial numbers).

    Parameters
    ----------
    config : dict with tables ``bench``, ``devices``, ``layout``, ``spots``.
    """
    devices = {}
    for name, d in sorted(config.get("devices", {}).items()):
        devices[name] = {k: d[k] for k in IDENTITY_KEYS if d.get(k) is not None}
    return _with_hash({"version": FINGERPRINT_VERSION, "name": str(config.get("bench", {}).get("name", "")),
                       "sizes": _sizes(config), "devices": devices,
                       "layouts": config.get("layout", {}), "spots": config.get("spots", {})})


def bench_fingerprint(bench) -> dict:
    """Fingerprint of an opened bench: its configuration plus what the devices report.

    Shapes and bit depths are the ones the opened devices report; serial numbers are
    added where a driver gives one (``device.serial``).
    """
    fp = fingerprint_from_config(bench.config)
    physical = getattr(bench, "physical", {})

    def device(name):
        return bench.slms.get(name) or bench.cameras.get(name) or physical.get(name)

    for name, entry in fp["devices"].items():
        dev = device(name)
        if dev is None:
            continue
        entry["shape"] = [int(s) for s in dev.shape]
        entry["bit_depth"] = int(dev.bit_depth)
        # a region shows its physical device's serial number
        parent = device(entry["region_of"]) if entry.get("region_of") else None
        serial = getattr(dev, "serial", None) or getattr(parent, "serial", None)
        if serial:
            entry["serial"] = str(serial)
    return _with_hash(fp)


def fingerprint_of(cal) -> dict:
    """The fingerprint a :class:`~calibration.calset.CalibrationSet` records ({} when none).

    Older files fall back to the one their stored bench configuration gives.
    """
    fp = getattr(cal, "bench_fingerprint", None) or {}
    if fp:
        return fp
    if cal.bench_config and cal.bench_config.get("devices"):
        return fingerprint_from_config(cal.bench_config)
    return {}


def _fmt(value) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def fingerprint_differences(recorded: dict, current: dict) -> list[str]:
    """What differs between two fingerprints, most telling first (empty when they match).

    Serial numbers count only where both fingerprints have one.
    """
    diffs = []
    if recorded.get("name") != current.get("name"):
        diffs.append(f"bench name {recorded.get('name')!r} vs {current.get('name')!r}")
    if list(recorded.get("sizes", [])) != list(current.get("sizes", [])):
        diffs.append(f"network sizes {recorded.get('sizes')} vs {current.get('sizes')}")
    rdev, cdev = recorded.get("devices", {}), current.get("devices", {})
    for name in sorted(set(rdev) - set(cdev)):
        diffs.append(f"device {name} is missing")
    for name in sorted(set(cdev) - set(rdev)):
        diffs.append(f"device {name} was not calibrated")
    for name in sorted(set(rdev) & set(cdev)):
        a, b = rdev[name], cdev[name]
        if a.get("serial") and b.get("serial") and a["serial"] != b["serial"]:
            diffs.append(f"{name} serial number {a['serial']} vs {b['serial']}")
        for key in IDENTITY_KEYS:
            if a.get(key) != b.get(key):
                diffs.append(f"{name} {key} {_fmt(a.get(key))} vs {_fmt(b.get(key))}")
    for table in ("layouts", "spots"):
        ra, ca = recorded.get(table, {}), current.get(table, {})
        for name in sorted(set(ra) | set(ca)):
            if ra.get(name) != ca.get(name):
                diffs.append(f"{table[:-1]} of {name} {_fmt(ra.get(name))} vs {_fmt(ca.get(name))}")
    return diffs


def check_bench(cal, bench, source: str = "calibration file", allow_other: bool = False) -> list[str]:
    """Refuse a calibration made on another bench; returns warnings.

    Parameters
    ----------
    cal : the :class:`~calibration.calset.CalibrationSet`.
    bench : the opened bench it is about to drive.
    source : the file's name for messages.
    allow_other : only warn (the user says it is the same hardware, e.g. after renaming).

    Raises
    ------
    calibration.deploy.DeployError : one line naming the first difference.
    """
    from calibration.deploy import DeployError
    recorded = fingerprint_of(cal)
    if not recorded:
        return [f"{source} records no bench (fits from lab measurement files); not checked against "
                f"bench {bench.name!r}"]
    diffs = fingerprint_differences(recorded, bench_fingerprint(bench))
    if not diffs:
        return []
    more = f" (and {len(diffs) - 1} more difference{'s' if len(diffs) > 2 else ''})" if len(diffs) > 1 else ""
    what = f"{diffs[0]}{more}"
    if allow_other:
        return [f"{source} was calibrated on another bench ({what}); used anyway (--allow-other-bench)"]
    raise DeployError(f"{source} was calibrated on another bench than {bench.name!r}: {what}; calibrate this "
                      f"bench, or pass --allow-other-bench if it is the same hardware")
