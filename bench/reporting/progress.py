"""The progress bar of a long run: tqdm on stderr, so stdout keeps the tables and the JSON line;
``--quiet`` turns it off for CI logs."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def bar(total: int, description: str, *, quiet: bool) -> Any:
    return tqdm(total=total, desc=description, unit="point", file=sys.stderr, disable=quiet, leave=False,
                dynamic_ncols=True)  # fmt: skip
