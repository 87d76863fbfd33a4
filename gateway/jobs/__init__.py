"""Async bulk jobs: a client submits many inputs at once, polls the job, downloads the results.

- ``model.py``: the plain types (``NewJob``, ``Job``, ``Claim``, ``ItemResult``, the statuses).
- ``store.py``: ``JobStore``, the interface the runner and the routes use, and ``SqliteJobStore``,
  which keeps jobs, inputs, chunks and results in one SQLite file so that none survives a crash
  half-written.
"""
