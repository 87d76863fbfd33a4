"""The gateway's result cache: an LRU of full embedding vectors, bounded by bytes.

- **Key**: a 16-byte blake2b digest of (model, truncate, variant, input) (``item_key``). Texts
  and token-id lists are tagged apart, so the text ``"[1, 2]"`` and the ids ``[1, 2]`` never meet;
  the model (length-prefixed) and the truncate flag are hashed in, so no hit crosses models or
  truncate settings. 128 bits: a collision is not a practical concern at any cache size.
- **Variant** (``key_variant``): the request options that change a vector besides its text. It is
  empty for what a request gets by default (the model's own normalisation, cut on the right), so
  those keys are the ones the cache has always used; a normalisation other than the model's adds
  ``|n0``/``|n1``, a cut from the left (with truncation on) adds ``|L``. A prompt needs nothing
  here: the gateway puts it in front of the text, which is hashed.
- **Value**: the FULL vector as raw float32 bytes plus its token count (so ``usage`` stays right
  on a hit). ``dimensions`` is cut by the routes from the full vector, hit or miss alike.
- **Bound**: ``bytes`` = the sum over entries of (vector bytes + ``ENTRY_OVERHEAD``), never above
  ``capacity``; a put evicts least-recently-used entries until the new one fits. The overhead is
  measured (tracemalloc, CPython 3.11: OrderedDict slot and link plus the ``Entry`` ~155 B, the
  key object 49 B, the vector's bytes header 33 B: ~237 B) and rounded up, so the bound is an
  honest upper bound of the Python heap the cache holds, not just of its payload.
- **Encoded form, for hot entries only.** A 384-dim vector's JSON is 4.2 KB against 1.5 KB of
  float32, and formatting it costs ~16-20 us per hit. So an entry gets its JSON form the first
  time a route that answers in JSON hits it (``json_of``), charged to the budget like the vector:
  entries nobody asks for twice stay small, hot ones cost no float formatting on a hit.

Counters per model (hits, misses, evictions, entries, bytes) feed ``GET /cache-stats``.
Single-threaded by design: only the event loop touches it.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass

import msgspec

from appliance.protocol import Input
from gateway.encoding import vector_json

ENTRY_OVERHEAD = 256  # bytes of Python objects per entry besides the vector (measured ~237)


@dataclass(slots=True)
class ModelCounters:
    hits: int = 0
    misses: int = 0
    bypassed: int = 0  # inputs that skipped the cache: use_cache=false, or too long to cache
    evictions: int = 0
    entries: int = 0
    bytes: int = 0


class Entry(msgspec.Struct, gc=False):
    """One cached vector. ``gc=False``: holds no containers, so the collector need not track it."""

    model: str
    vector: bytes  # float32, native byte order (little-endian on every supported CPU)
    tokens: int
    size: int  # what it counts against the budget
    json: bytes | None = None  # the vector as a JSON array, once a JSON route has hit it


def key_variant(*, normalize: bool | None, model_normalizes: bool | None, truncate: bool,
                direction: str = "right") -> bytes:  # fmt: skip
    """The key bytes for the options that change a vector; b"" for the defaults.

    ``normalize`` is the request's (None: the model's default); ``model_normalizes`` the model's
    default, None while no worker has told it. An explicit choice then always gets its tag (it may
    differ from the default nobody knows yet); an explicit choice equal to a known default shares
    the default's key, as it is the same vector. The direction matters only when cutting is allowed.
    """
    out = b""
    if normalize is not None and normalize != model_normalizes:
        out += b"|n1" if normalize else b"|n0"
    if truncate and direction == "left":
        out += b"|L"
    return out


def item_key(model: str, truncate: bool, item: Input, variant: bytes = b"") -> bytes:
    """The cache (and coalescing) key of one input; ``variant`` from ``key_variant``."""
    if isinstance(item, str):
        # surrogatepass: JSON may carry lone surrogates; they must hash, not raise
        data = item.encode("utf-8", "surrogatepass")
        digest = _prefix(model, truncate, b"s", variant).copy()
    else:
        data = repr(item).encode()  # ids may exceed 64 bits: repr is exact
        digest = _prefix(model, truncate, b"i", variant).copy()
    digest.update(data)
    return digest.digest()


@functools.lru_cache(maxsize=256)
def _prefix(model: str, truncate: bool, form: bytes, variant: bytes = b"") -> hashlib.blake2b:
    """The hash state after (model, truncate, variant, input form): copying it is faster than
    rehashing the prefix for every input. The model name is length-prefixed so no two prefixes run
    together; a variant starts with "|", never the "s"/"i" of the form, so none runs into another."""
    name = model.encode()
    return hashlib.blake2b(len(name).to_bytes(4, "little") + name + (b"T" if truncate else b"F") + variant + form,
                           digest_size=16)  # fmt: skip


class ResultCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.bytes = 0
        self._entries: OrderedDict[bytes, Entry] = OrderedDict()
        self._counters: dict[str, ModelCounters] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def counters(self, model: str) -> ModelCounters:
        counters = self._counters.get(model)
        if counters is None:
            counters = self._counters[model] = ModelCounters()
        return counters

    def all_counters(self) -> dict[str, ModelCounters]:
        return self._counters

    def get(self, key: bytes, model: str) -> Entry | None:
        """The entry, made most recently used; counted as a hit or a miss for ``model``."""
        entry = self._entries.get(key)
        counters = self.counters(model)
        if entry is None:
            counters.misses += 1
            return None
        counters.hits += 1
        self._entries.move_to_end(key)
        return entry

    def peek(self, key: bytes) -> Entry | None:
        """The entry, if any, without counting or reordering anything."""
        return self._entries.get(key)

    def hit(self, key: bytes, model: str) -> None:
        """Count a hit on an entry found with ``peek`` and make it most recently used."""
        self.counters(model).hits += 1
        self._entries.move_to_end(key)

    def json_of(self, entry: Entry) -> bytes:
        """The entry's vector as JSON, encoded once and then kept (and charged) with the entry.
        Charging it may evict older entries; the entry itself is the most recently used, so it
        goes last, and its JSON is returned either way."""
        if entry.json is None:
            entry.json = vector_json(entry.vector)
            grown = len(entry.json)
            entry.size += grown
            self._account(entry.model, grown, 0)
            while self.bytes > self.capacity and len(self._entries) > 1:
                self._evict_oldest()
        return entry.json

    def put(self, key: bytes, model: str, vector: bytes, tokens: int, *, evict: bool = True) -> bool:
        """Store a vector, evicting the least recently used entries until it fits. With
        ``evict=False`` (preloading) nothing is evicted and False means "no room". An entry
        already present is only touched: a key always maps to the same vector."""
        if key in self._entries:
            self._entries.move_to_end(key)
            return True
        size = len(vector) + ENTRY_OVERHEAD
        if size > self.capacity or (not evict and self.bytes + size > self.capacity):
            return False
        while self.bytes + size > self.capacity:
            self._evict_oldest()
        self._entries[key] = Entry(model, vector, tokens, size)
        self._account(model, size, 1)
        return True

    def room(self, vector_bytes: int) -> int:
        """How many more entries of this many vector bytes fit without evicting anything."""
        return max(0, (self.capacity - self.bytes) // (vector_bytes + ENTRY_OVERHEAD))

    def _evict_oldest(self) -> None:
        _, entry = self._entries.popitem(last=False)
        self._account(entry.model, -entry.size, -1)
        self.counters(entry.model).evictions += 1

    def _account(self, model: str, size: int, entries: int) -> None:
        """``size`` bytes and ``entries`` entries more (negative: fewer) for ``model``."""
        counters = self.counters(model)
        counters.entries += entries
        counters.bytes += size
        self.bytes += size
