"""Child process for test_pinning: applies a slot the way a worker boots, then reports what stuck.

Usage: python _pin_child.py '<slot JSON>' [--no-torch] [--omp-drift] [--borrows]. Prints one JSON
object. ``--omp-drift`` starts torch with 1 OpenMP thread, so only ``apply_torch_threads`` can fix
the count; ``--borrows`` pins as a worker the gateway may lend cores to.
"""

from __future__ import annotations

import json
import os
import sys


def openmp_loaded() -> list[str]:
    """The OpenMP runtime files mapped into this process."""
    with open("/proc/self/maps") as maps:
        return sorted({line.split()[-1] for line in maps if "libgomp" in line})


def main(argv: list[str]) -> int:
    from appliance.slots import Slot
    from workers.pinning import apply_in_child, apply_torch_threads

    fields = json.loads(argv[0])
    slot = Slot(fields["index"], fields["role"], tuple(fields["cores"]), fields["gpu"])
    apply_in_child(slot, borrows="--borrows" in argv)  # first, before torch, as workers/main.py does
    report: dict[str, object] = {
        "affinity": sorted(os.sched_getaffinity(0)),
        "env": {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "spin": os.environ.get("GOMP_SPINCOUNT"),
        "torch_imported_before": "torch" in sys.modules,
        "openmp_before_torch": openmp_loaded(),
    }
    if "--omp-drift" in argv:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"
    if "--no-torch" not in argv:
        import torch

        report["threads_at_import"] = torch.get_num_threads()

        apply_torch_threads(slot)
        apply_torch_threads(slot)  # a second call must not fail (inter-op threads may be set once)
        report["threads"] = torch.get_num_threads()
        report["interop_threads"] = torch.get_num_interop_threads()
        report["cuda_devices"] = torch.cuda.device_count()
        report["openmp_after_torch"] = openmp_loaded()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
