"""The designs this product replaces, each a real server on one port speaking OpenAI's
``POST /v1/embeddings``, so ``bench.loadgen`` drives them exactly as it drives the appliance.

| design       | module          | what it is                                                          |
|--------------|-----------------|---------------------------------------------------------------------|
| `inline`     | `inline.py`     | one aiohttp process, the forward pass run inline in the handler      |
| `threadpool` | `threadpool.py` | the same with a thread-pool executor, one forward pass per request   |
| `microbatch` | `microbatch.py` | the thread pool plus a fixed-window micro-batcher (32 inputs, 10 ms) |
| `reuseport`  | `reuseport.py`  | N processes behind one port (SO_REUSEPORT), each its own model copy  |

Every design loads the model through ``workers.runtimes`` (``model.py``), so its forward pass,
tokenizer, truncation and dtype are the appliance's; OpenMP threads wait passively, as in the
appliance's workers. ``server.py`` is the command that serves a design; ``launch.py`` starts one
on a free port, waits for ``/health`` and stops its whole process group.
"""

from __future__ import annotations

DESIGNS = ("inline", "threadpool", "microbatch", "reuseport")
