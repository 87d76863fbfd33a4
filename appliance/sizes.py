"""Byte sizes as people write them: "512MiB", "2GB", "64k" (decimal and binary units, any case).

``parse_bytes`` turns one into an int of bytes; the config's size keys accept them
(``appliance/config.py``).
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "kib": 1 << 10,
    "m": 10**6, "mb": 10**6, "mib": 1 << 20,
    "g": 10**9, "gb": 10**9, "gib": 1 << 30,
    "t": 10**12, "tb": 10**12, "tib": 1 << 40,
}  # fmt: skip
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_bytes(value: object) -> object:
    """'512MiB' -> 536870912; ints pass through; anything unparsable is left for validation."""
    if not isinstance(value, str):
        return value
    match = _SIZE.match(value)
    if not match or match.group(2).lower() not in _UNITS:
        return value
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])
