"""Which models a worker holds, loaded and warmed up before it says ``Ready``.

The primary worker (slot 0) loads every configured model; light workers load only the main one,
so extra models cost memory once, not once per device.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

from appliance.config import ModelConfig, resolve_model_path
from appliance.protocol import WorkerRole, WorkerSpec
from workers.batcher import check_budget
from workers.runtimes import Runtime, load_runtime

log = logging.getLogger("appliance.worker")


def models_for_role(models: Sequence[ModelConfig], role: WorkerRole) -> list[ModelConfig]:
    if role == "primary":
        return list(models)
    return [m for m in models if m.main]


def device_for(spec: WorkerSpec) -> str:
    # pinning set CUDA_VISIBLE_DEVICES to this slot's GPU, so inside the worker it is always cuda:0
    return "cuda:0" if spec.gpu is not None else "cpu"


def load_models(spec: WorkerSpec) -> dict[str, Runtime] | None:
    """Load, budget-check and warm every model of this worker's role; None after logging a failure."""
    loaded: dict[str, Runtime] = {}
    for model in models_for_role(spec.models, spec.role):
        runtime = load_one(spec, model)
        if runtime is None:
            return None
        loaded[model.name] = runtime
    return loaded


def load_one(spec: WorkerSpec, model: ModelConfig) -> Runtime | None:
    started = time.perf_counter()
    try:
        path = resolve_model_path(model.path, spec.state_dir)
    except (FileNotFoundError, ValueError) as exc:
        log.error("model %r: cannot resolve path %r: %s", model.name, model.path, exc,
                  extra={"event": "model_load_failed", "worker": spec.worker, "model": model.name,
                         "path": model.path, "reason": str(exc)})  # fmt: skip
        return None
    try:
        runtime = load_runtime(model, path, device_for(spec))
        check_budget(spec.max_batch_tokens, runtime.max_length)
        runtime.warmup()
    except Exception as exc:  # any failure here is a load failure, reported with model and path
        log.error("model %r failed to load from %s: %s", model.name, path, exc,
                  extra={"event": "model_load_failed", "worker": spec.worker, "model": model.name,
                         "path": str(path), "reason": str(exc)})  # fmt: skip
        log.debug("load failure detail", exc_info=True)
        return None
    load_s = time.perf_counter() - started
    log.info(
        "model %r loaded from %s (%s, %s, dim %d, max_length %d) in %.1fs",
        model.name, path, runtime.device, runtime.dtype, runtime.dim, runtime.max_length, load_s,
        extra={"event": "model_loaded", "worker": spec.worker, "model": model.name, "path": str(path),
               "device": str(runtime.device), "dtype": str(runtime.dtype), "dim": runtime.dim,
               "max_length": runtime.max_length, "load_s": round(load_s, 3)},
    )  # fmt: skip
    return runtime
