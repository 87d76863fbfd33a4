"""What a bench run leaves behind: ``bench/results/<timestamp>/`` with ``results.json``,
``report.md`` and PNG plots.

- ``machine``: the machine (CPU model, cores, flags, GPU, memory, load) and the versions.
- ``figures``: a scenario's summary flattened into named figures, each with its unit, and the
  run's measured noise (what ``bench diff`` holds a change against).
- ``plots``: throughput and p50/p99 latency against concurrency, one line per system.
- ``record``: the results folder itself, and the tee that captures a scenario's printed tables.
- ``progress``: the progress bar (tqdm on stderr), off with ``--quiet``.
"""
