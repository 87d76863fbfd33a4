"""Where bulk jobs live, as the rest of the appliance imports it.

- ``JobStore`` and ``StoreError``: the interface the runner and the routes use (``interface.py``).
- ``SqliteJobStore``: the store the appliance runs, one SQLite file under its ``state_dir``
  (``sqlite_store.py``; the file's tables and how it is opened: ``sqlite_schema.py``).

The rest of the appliance imports these three names from here, never from the modules that
define them, so those can be cut up again without touching it.
"""

from __future__ import annotations

from gateway.jobs.interface import JobStore, StoreError
from gateway.jobs.sqlite_store import SqliteJobStore

__all__ = ["JobStore", "SqliteJobStore", "StoreError"]
