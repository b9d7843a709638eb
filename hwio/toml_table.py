"""Typed access to TOML tables (:class:`TableReader`): every error names the file and the key path."""
from __future__ import annotations

import math
from typing import Any

_MISSING = object()


# ---------------------------------------------------------------------------------------------
def _show(value) -> str:
    return repr(value) if not isinstance(value, dict) else "a table"


class TableReader:
    """Typed access to one TOML table; errors name the file and the key path.

    Parameters
    ----------
    label : file name used in messages (``sim.toml``).
    path : dotted table path (``devices.slm1``).
    table : the table's dict.
    """

    def __init__(self, label: str, path: str, table: Any):
        self.label = label
        self.path = path
        if not isinstance(table, dict):
            raise ValueError(f"{label}: [{path}] must be a table, got {_show(table)}")
        self.table = table
        self._seen: set[str] = set()

    def where(self, key: str | None = None) -> str:
        """``file: [path].key`` for messages."""
        return f"{self.label}: [{self.path}]" + (f".{key}" if key is not None else "")

    def error(self, key: str | None, message: str) -> ValueError:
        """A ValueError ``file: [path].key message``."""
        return ValueError(f"{self.where(key)} {message}")

    def has(self, key: str) -> bool:
        return key in self.table

    def _get(self, key, default, hint=""):
        self._seen.add(key)
        if key not in self.table:
            if default is _MISSING:
                raise self.error(key, f"is missing{(' (' + hint + ')') if hint else ''}")
            return default, False
        return self.table[key], True

    def _check_range(self, key, value, lo, hi, lo_open=False):
        if lo is not None and (value <= lo if lo_open else value < lo):
            raise self.error(key, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
        if hi is not None and value > hi:
            raise self.error(key, f"must be <= {hi}, got {value!r}")

    def int(self, key, default=_MISSING, lo=None, hi=None, hint=""):
        value, given = self._get(key, default, hint)
        if not given:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"must be an integer, got {_show(value)}")
        self._check_range(key, value, lo, hi)
        return value

    def float(self, key, default=_MISSING, lo=None, hi=None, lo_open=False, allow_inf=False, hint=""):
        value, given = self._get(key, default, hint)
        if not given:
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(key, f"must be a number, got {_show(value)}")
        value = float(value)
        if math.isnan(value) or (math.isinf(value) and not allow_inf):
            raise self.error(key, f"must be a finite number, got {value!r}")
        self._check_range(key, value, lo, hi, lo_open)
        return value

    def str(self, key, default=_MISSING, choices=None, hint=""):
        value, given = self._get(key, default, hint)
        if not given:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_show(value)}")
        if choices is not None and value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(repr, choices))}, got {value!r}")
        return value

    def bool(self, key, default=_MISSING):
        value, given = self._get(key, default)
        if given and not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_show(value)}")
        return value

    def numbers(self, key, default=_MISSING, length=None, integer=False, lo=None, lo_open=False, hint=""):
        """A list of numbers (``length`` fixed if given); returned as a list."""
        value, given = self._get(key, default, hint)
        if not given:
            return value
        what = "integers" if integer else "numbers"
        shape = f"a list of {length} {what}" if length else f"a list of {what}"
        if not isinstance(value, list):
            raise self.error(key, f"must be {shape}, got {_show(value)}")
        if length is not None and len(value) != length:
            raise self.error(key, f"must be {shape}, got {len(value)} entries")
        out = []
        for v in value:
            bad = isinstance(v, bool) or not isinstance(v, (int, float)) or (integer and not isinstance(v, int))
            if bad or (not integer and not math.isfinite(v)):
                raise self.error(key, f"must be {shape}, got {value!r}")
            if lo is not None and (v <= lo if lo_open else v < lo):
                raise self.error(key, f"entries must be {'>' if lo_open else '>='} {lo}, got {value!r}")
            out.append(int(v) if integer else float(v))
        return out

    def number_or_pair(self, key, default, lo=None):
        """A number used for both layers, or a list of two numbers."""
        value, given = self._get(key, default)
        if not given:
            return value
        if isinstance(value, list):
            self._seen.discard(key)
            return tuple(self.numbers(key, length=2, lo=lo))
        v = self.float(key, lo=lo)
        return (v, v)

    def strings(self, key, default=_MISSING):
        value, given = self._get(key, default)
        if not given:
            return value
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"must be a list of strings, got {_show(value)}")
        return list(value)

    def sub(self, key, required=False) -> "TableReader | None":
        """The sub-table ``key`` as a reader (None when absent and not required)."""
        self._seen.add(key)
        if key not in self.table:
            if required:
                raise ValueError(f"{self.label}: table [{self.path}.{key}] is missing")
            return None
        return TableReader(self.label, f"{self.path}.{key}", self.table[key])

    def subtables(self) -> list[str]:
        """Names of the keys that hold tables (marked as read)."""
        names = [k for k, v in self.table.items() if isinstance(v, dict)]
        self._seen.update(names)
        return names

    def finish(self) -> None:
        """Raise if the table has keys nobody read."""
        unknown = [k for k in self.table if k not in self._seen]
        if unknown:
            known = sorted(self._seen)
            raise self.error(unknown[0], f"is not a known key (known here: {', '.join(known) or 'none'}); "
                                         f"check the spelling")
