"""``gateway/result_cache.py``: the byte-bounded LRU (checked against a reference LRU with
hypothesis), per-model eviction counts, preloading that never evicts, and the item keys that keep
models, ``truncate`` settings and input forms apart.
"""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.result_cache import ENTRY_OVERHEAD, ResultCache, item_key, key_variant

pytestmark = pytest.mark.timeout(60)


def vec(size: int, fill: int = 0) -> bytes:
    return bytes([fill % 256]) * size


@settings(max_examples=200, deadline=None, derandomize=True)
@given(capacity=st.integers(0, 20_000),
       ops=st.lists(st.tuples(st.sampled_from(["put", "get"]), st.integers(0, 30), st.integers(0, 6_000)),
                    max_size=120))  # fmt: skip
def test_lru_stays_within_its_byte_bound_and_evicts_least_recently_used(
        capacity: int, ops: list[tuple[str, int, int]]) -> None:  # fmt: skip
    cache = ResultCache(capacity)
    model: OrderedDict[bytes, int] = OrderedDict()  # the reference LRU: key -> counted size
    for op, k, size in ops:
        key = k.to_bytes(16, "little")
        if op == "get":
            assert (cache.get(key, "m") is not None) == (key in model)
            if key in model:
                model.move_to_end(key)
            continue
        stored = cache.put(key, "m", vec(size, k), tokens=k)
        if key in model:
            model.move_to_end(key)  # present: touched, never replaced
        elif size + ENTRY_OVERHEAD <= capacity:
            while sum(model.values()) + size + ENTRY_OVERHEAD > capacity:
                model.popitem(last=False)
            model[key] = size + ENTRY_OVERHEAD
        assert stored == (key in model)
        assert cache.bytes <= capacity
        assert list(cache._entries) == list(model)  # same entries, same recency order
        assert cache.bytes == sum(model.values()) == cache.counters("m").bytes
        assert len(cache) == cache.counters("m").entries


def test_evictions_are_counted_per_model_and_preloading_never_evicts() -> None:
    cache = ResultCache(3 * (100 + ENTRY_OVERHEAD))
    for i in range(3):
        assert cache.put(bytes([i]) * 16, "a", vec(100), 1)
    assert not cache.put(b"x" * 16, "b", vec(100), 1, evict=False)  # full: preload stops here
    assert len(cache) == 3 and cache.counters("a").evictions == 0
    assert cache.put(b"y" * 16, "b", vec(100), 1)  # a request's put evicts the oldest
    assert cache.counters("a").evictions == 1 and cache.counters("a").entries == 2
    assert cache.counters("b").entries == 1 and bytes([0]) * 16 not in cache
    assert not cache.put(b"z" * 16, "b", vec(cache.capacity), 1)  # larger than the whole budget


def test_keys_separate_models_truncate_and_input_forms() -> None:
    keys = [
        item_key("mini", True, "hello"),
        item_key("mini", False, "hello"),
        item_key("static", True, "hello"),
        item_key("mini", True, "hello "),
        item_key("min", True, "ihello"),  # the model name is length-prefixed: no run-together
        item_key("mini", True, "[1, 2]"),
        item_key("mini", True, [1, 2]),
        item_key("mini", True, [1, 2, 0]),
        item_key("mini", True, "\ud800"),  # a lone surrogate hashes rather than raising
    ]
    assert len(set(keys)) == len(keys) and all(len(k) == 16 for k in keys)
    assert item_key("mini", True, [2**70]) == item_key("mini", True, [2**70])


def test_default_options_keep_the_keys_the_cache_always_used() -> None:
    import hashlib

    old = hashlib.blake2b(b"\x04\x00\x00\x00mini" + b"T" + b"s" + b"hello", digest_size=16).digest()
    default = key_variant(normalize=None, model_normalizes=True, truncate=True, direction="right")
    assert default == b"" and item_key("mini", True, "hello", default) == item_key("mini", True, "hello") == old


@pytest.mark.parametrize(("normalize", "model_normalizes", "truncate", "direction", "variant"), [
    (True, True, True, "right", b""),  # the model's own choice, said out loud: the same vector
    (False, False, True, "right", b""),
    (False, True, True, "right", b"|n0"),
    (True, False, True, "right", b"|n1"),
    (True, None, True, "right", b"|n1"),  # the default is not known yet: an explicit choice is tagged
    (False, None, True, "right", b"|n0"),
    (None, None, True, "left", b"|L"),
    (None, True, False, "left", b""),  # nothing is cut, so no side is either
    (False, True, True, "left", b"|n0|L"),
])  # fmt: skip
def test_the_variant_names_only_what_changes_a_vector(normalize: bool | None, model_normalizes: bool | None,
                                                      truncate: bool, direction: str, variant: bytes) -> None:  # fmt: skip
    assert key_variant(normalize=normalize, model_normalizes=model_normalizes, truncate=truncate,
                       direction=direction) == variant  # fmt: skip


def test_variants_separate_keys() -> None:
    keys = {item_key("mini", True, "hello", v) for v in (b"", b"|n0", b"|n1", b"|L", b"|n0|L", b"|n1|L")}
    assert len(keys) == 6
