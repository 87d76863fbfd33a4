"""Make the static default model (``minilm-static``) from a local transformer, fully offline.

Uses model2vec's ``distill`` (every vocabulary token through the encoder, PCA, Zipf/SIF
weighting). model2vec is a build-time tool, not a runtime dependency, and its ``[distill]``
extra pins an older transformers, so it is installed *without* that extra; its distill path
needs only ``skeletoken`` on top (``protobuf`` comes with it):

    pip install "model2vec==0.10.0" "skeletoken>=0.6,<0.7"

which leaves torch and transformers as they are. The result is written to a temporary sibling
directory, checked by loading it with our own static runtime, and only then moved to ``out``: an
interrupted or broken distill never leaves a directory that looks like a finished model.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

INSTALL_HINT = 'pip install "model2vec==0.10.0" "skeletoken>=0.6,<0.7"'

log = logging.getLogger("appliance.distill")


class DistillError(RuntimeError):
    """Distilling failed; the message says why and, when a tool is missing, how to install it."""


def distill(source: Path, out: Path, *, pca_dims: int | None = 256) -> Path:
    """Distill the model in ``source`` into a model2vec directory ``out`` (replaced if present)."""
    source, out = Path(source), Path(out)
    if not (source / "config.json").is_file():
        raise DistillError(f"{source} is not a local HF model directory (no config.json)")
    model2vec_distill = import_model2vec()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        log.info("distilling %s (pca_dims=%s) into %s", source, pca_dims, out)
        static = model2vec_distill(str(source), pca_dims=pca_dims)
        static.save_pretrained(str(tmp))
        check_loads(tmp)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def import_model2vec():  # type: ignore[no-untyped-def]
    # a local path must never fall through to a hub download
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from model2vec.distill import distill as model2vec_distill
    except ImportError as exc:
        raise DistillError(f"model2vec's distill is not importable ({exc}); install it with: {INSTALL_HINT}") from exc
    return model2vec_distill


def check_loads(path: Path) -> None:
    """The output must load with *our* static runtime and give finite vectors."""
    import numpy as np

    from appliance.config import ModelConfig
    from workers.runtimes.static import load

    runtime = load(ModelConfig(name=path.name, path=str(path), kind="static"), path)
    vectors = runtime.forward(runtime.tokenize(["a distilled model", "check"], truncate=True))
    if vectors.shape != (2, runtime.dim) or not np.isfinite(vectors).all():
        raise DistillError(f"the distilled model in {path} gives unusable vectors {vectors.shape}")


def replace_dir(new: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(new, out)  # order matters: the finished model appears in one rename
    shutil.rmtree(old, ignore_errors=True)
