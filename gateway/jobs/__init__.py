"""Async bulk jobs: a client submits many inputs at once, polls the job, downloads the results.

- ``model.py``: the plain types (``NewJob``, ``Job``, ``Claim``, ``ItemResult``, the statuses).
- ``store.py``: where the rest of the appliance imports the job store from: ``JobStore``,
  ``StoreError`` and ``SqliteJobStore``, which the modules below define.
- ``interface.py``: ``JobStore``, the interface the runner and the routes use, and ``StoreError``.
- ``sqlite_store.py``: ``SqliteJobStore``, which keeps jobs, inputs, chunks and results in one
  SQLite file so that none survives a crash half-written.
- ``sqlite_schema.py``: that file's tables, how it is opened and checked (WAL, integrity, schema
  version), and how inputs and job rows are encoded in it.
- ``threaded.py``: the store used from the event loop, every call on one dedicated thread.
- ``compute.py``: one chunk computed into per-item results at background priority.
- ``runner.py``: claims chunks, computes them, commits each with its results; retries, sweeps.
- ``service.py``: ``Jobs``, what the routes call (bounds, 404s) and the jobs' lifecycle.
"""
