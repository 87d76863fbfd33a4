"""``gateway/cached_backend.py`` with request options: a vector computed with one normalisation
or truncation direction is never served from the cache, nor shared in flight, for another, and
what a request gets by default keeps its old key. The inner backend here makes every option show
in the vector it answers, so a mix-up cannot hide."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import numpy as np
import pytest

from appliance.protocol import Input
from cache_checks import CONFIG, run
from gateway.backend import EmbedOutcome, ModelCard
from gateway.cached_backend import CachedBackend
from gateway.result_cache import item_key

pytestmark = pytest.mark.timeout(60)

NORMALISING, PLAIN, UNKNOWN = "normalising", "plain", "unknown"  # models by their default normalisation


class OptionBackend:
    """Embeds a text as [len, normalised?, cut left?]; a model's default normalisation is its card's."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[tuple[list[Input], dict[str, Any]]] = []

    def models(self) -> list[ModelCard]:
        return [ModelCard(name=NORMALISING, kind="transformer", dim=3, max_length=8, main=True, workers=[0],
                          normalize=True),
                ModelCard(name=PLAIN, kind="transformer", dim=3, max_length=8, main=False, workers=[0]),
                ModelCard(name=UNKNOWN, kind="transformer", dim=0, max_length=0, main=False, workers=[])]  # fmt: skip

    def default_normalize(self, model: str) -> bool:
        return model == NORMALISING

    async def embed(self, model: str, inputs: Sequence[Input], *, truncate: bool, deadline: float,
                    use_cache: bool = True, priority: int = 0, normalize: bool | None = None,
                    truncation_direction: str = "right") -> EmbedOutcome:  # fmt: skip
        self.calls.append((list(inputs), {"normalize": normalize, "direction": truncation_direction}))
        await asyncio.sleep(self.delay_s)
        normalized = self.default_normalize(model) if normalize is None else normalize
        left = truncate and truncation_direction == "left"
        vectors = np.array([[len(item), normalized, left] for item in inputs], dtype=np.float32)
        return EmbedOutcome(vectors=vectors, tokens=[1] * len(inputs))


async def embed(cb: CachedBackend, inputs: Sequence[Input], model: str = NORMALISING, **options: Any) -> np.ndarray:
    deadline = asyncio.get_running_loop().time() + 2.0
    options.setdefault("truncate", True)
    return (await cb.embed(model, inputs, deadline=deadline, **options)).vectors


def test_the_default_request_keeps_the_old_keys() -> None:
    async def main() -> None:
        cb = CachedBackend(CONFIG, OptionBackend())  # type: ignore[arg-type]
        await embed(cb, ["hello"])
        assert item_key(NORMALISING, True, "hello") in cb.cache

    run(main())


def test_normalisation_other_than_the_models_is_computed_and_cached_apart() -> None:
    async def main() -> None:
        inner = OptionBackend()
        cb = CachedBackend(CONFIG, inner)  # type: ignore[arg-type]
        assert (await embed(cb, ["text"]))[0].tolist() == [4, 1, 0]
        assert (await embed(cb, ["text"], normalize=False))[0].tolist() == [4, 0, 0]  # not the cached one
        assert (await embed(cb, ["text"], normalize=True))[0].tolist() == [4, 1, 0]  # the default's entry
        assert (await embed(cb, ["text"], normalize=False))[0].tolist() == [4, 0, 0]  # its own entry
        assert len(inner.calls) == 2
        hit = cb.lookup(NORMALISING, ["text"], truncate=True, json=True, normalize=False)
        assert hit is not None and hit.json_rows == [b"[4.0,0.0,0.0]"]  # the hot JSON row is its own too
        assert cb.lookup(NORMALISING, ["text"], truncate=True, json=True).json_rows == [b"[4.0,1.0,0.0]"]

    run(main())


def test_a_model_whose_default_is_unknown_tags_every_explicit_choice() -> None:
    async def main() -> None:
        inner = OptionBackend()
        cb = CachedBackend(CONFIG, inner)  # type: ignore[arg-type]
        await embed(cb, ["text"], model=UNKNOWN)  # computed with the worker's default, whatever it is
        assert (await embed(cb, ["text"], model=UNKNOWN, normalize=False))[0].tolist() == [4, 0, 0]
        assert (await embed(cb, ["text"], model=UNKNOWN, normalize=True))[0].tolist() == [4, 1, 0]
        assert len(inner.calls) == 3
        assert (await embed(cb, ["text"], model=PLAIN, normalize=True))[0].tolist() == [4, 1, 0]
        assert (await embed(cb, ["text"], model=PLAIN))[0].tolist() == [4, 0, 0]

    run(main())


def test_the_direction_separates_keys_only_when_cutting_is_allowed() -> None:
    async def main() -> None:
        inner = OptionBackend()
        cb = CachedBackend(CONFIG, inner)  # type: ignore[arg-type]
        assert (await embed(cb, ["text"]))[0].tolist() == [4, 1, 0]
        assert (await embed(cb, ["text"], truncation_direction="left"))[0].tolist() == [4, 1, 1]
        assert (await embed(cb, ["text"], truncation_direction="left"))[0].tolist() == [4, 1, 1]
        assert len(inner.calls) == 2
        await embed(cb, ["text"], truncate=False)
        assert (await embed(cb, ["text"], truncate=False, truncation_direction="left"))[0].tolist() == [4, 1, 0]
        assert len(inner.calls) == 3  # nothing is cut without truncate: one vector for both sides

    run(main())


def test_concurrent_identical_texts_with_different_options_are_not_merged() -> None:
    async def main() -> None:
        inner = OptionBackend(delay_s=0.05)
        cb = CachedBackend(CONFIG, inner)  # type: ignore[arg-type]
        variants: list[dict[str, Any]] = [{}, {"normalize": False}, {"truncation_direction": "left"},
                                          {"normalize": False, "truncation_direction": "left"}, {}]  # fmt: skip
        answers = await asyncio.gather(*(embed(cb, ["same text"], **v) for v in variants))
        assert [a[0].tolist() for a in answers] == [[9, 1, 0], [9, 0, 0], [9, 1, 1], [9, 0, 1], [9, 1, 0]]
        assert len(inner.calls) == 4  # the two default requests shared one computation
        assert cb.cache_stats().coalesced == 1

    run(main())
