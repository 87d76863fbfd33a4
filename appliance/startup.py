"""``StartupError``: the appliance cannot start, and its message says why in one line.

Every part that can refuse a start raises a subclass of it (a bad API-keys or preload file, a
job store that cannot be opened, a port in use), so ``appliance/serving.py`` turns them all into
one "cannot start" line and a non-zero exit without knowing each part's own error type.
"""

from __future__ import annotations


class StartupError(RuntimeError):
    """The appliance cannot start; the message says why in one line."""
