"""The model a baseline serves, loaded as the appliance's workers load it, and one embed call.

``embed`` is the appliance worker's path for one request: batched tokenize (truncating, the
HTTP default), then one padded forward pass, normalised as the model does by default; rows come
back float32.
"""

from __future__ import annotations

import msgspec
import numpy as np

from appliance.config import ModelConfig, resolve_model_path
from workers.runtimes import Runtime, l2_normalize, load_runtime

STATE_DIR = ".state"


def load(name: str, path: str, *, dtype: str = "auto", device: str = "cpu", threads: int = 1) -> Runtime:
    """The runtime, warmed up, with ``threads`` intra-op threads and one inter-op thread (as a worker)."""
    import torch

    torch.set_num_threads(max(1, threads))
    if torch.get_num_interop_threads() != 1:
        torch.set_num_interop_threads(1)
    model = msgspec.convert({"name": name, "path": path, "main": True, "dtype": dtype}, ModelConfig)
    runtime = load_runtime(model, resolve_model_path(model.path, STATE_DIR), device)
    runtime.warmup()
    return runtime


def embed(runtime: Runtime, texts: list[str]) -> np.ndarray:
    vectors = runtime.forward(runtime.tokenize(texts, truncate=True))
    return l2_normalize(vectors) if runtime.normalize else vectors
