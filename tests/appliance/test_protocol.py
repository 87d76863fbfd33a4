"""appliance/protocol.py's evolution rule for the lent cores and the per-item refusals: fields
appended with a default, so a record from an older gateway or worker still decodes, and a new
one round-trips."""

from __future__ import annotations

import msgspec

from appliance.protocol import (
    Embed,
    FailureKind,
    Refusal,
    RequestCodec,
    Rerank,
    ResponseCodec,
    Stats,
    Vectors,
    WorkerCounters,
)

REQUESTS, RESPONSES = RequestCodec(), ResponseCodec()


def before(record: bytes, kind: type[msgspec.Struct], field: str) -> bytes:
    """``record`` as a peer from before ``kind``'s ``field`` would have written it: that field
    and every later one left off."""
    fields = msgspec.msgpack.decode(record)
    assert isinstance(fields, list)  # array_like: [tag, field, ...]
    return msgspec.msgpack.encode(fields[: 1 + kind.__struct_fields__.index(field)])


def test_an_older_gateway_s_embed_and_rerank_lend_no_cores() -> None:
    embed = Embed(7, "m", ["text"], sent=1.5, spare_cores=[1, 2])
    rerank = Rerank(8, "m", "query", ["doc"], sent=2.5, spare_cores=[3])
    old_embed = REQUESTS.decode(before(REQUESTS.encode(embed), Embed, "spare_cores"))
    old_rerank = REQUESTS.decode(before(REQUESTS.encode(rerank), Rerank, "spare_cores"))
    assert isinstance(old_embed, Embed) and isinstance(old_rerank, Rerank)
    assert (old_embed.spare_cores, old_embed.sent, old_rerank.spare_cores, old_rerank.sent) == ([], 1.5, [], 2.5)


def test_lent_cores_round_trip_and_default_to_none() -> None:
    assert REQUESTS.decode(REQUESTS.encode(Embed(1, "m", ["x"], spare_cores=[4, 5]))).spare_cores == [4, 5]
    assert REQUESTS.decode(REQUESTS.encode(Rerank(2, "m", "q", ["d"], spare_cores=[6]))).spare_cores == [6]
    assert Embed(3, "m", ["x"]).spare_cores == [] and Rerank(4, "m", "q", []).spare_cores == []


def test_an_older_worker_s_counters_read_as_no_widened_batch() -> None:
    old = msgspec.structs.asdict(WorkerCounters(batches=3))
    del old["widened_batches"], old["threads"]
    stats = RESPONSES.decode(msgspec.msgpack.encode(["stats", 0, 42, old]))  # array_like, counters a map
    assert isinstance(stats, Stats)
    assert (stats.counters.batches, stats.counters.widened_batches, stats.counters.threads) == (3, 0, 0)


def test_an_older_gateway_s_embed_does_not_isolate() -> None:
    embed = REQUESTS.decode(before(REQUESTS.encode(Embed(1, "m", ["x"], spare_cores=[2], isolate=True)), Embed,
                                   "isolate"))  # fmt: skip
    assert isinstance(embed, Embed) and (embed.spare_cores, embed.isolate) == ([2], False)
    assert REQUESTS.decode(REQUESTS.encode(Embed(1, "m", ["x"], isolate=True))).isolate is True


def test_an_older_worker_s_vectors_refuse_nothing_and_refusals_round_trip() -> None:
    vectors = Vectors(3, 2, b"\0" * 8, [4], tokenize_us=9, refused=[Refusal(1, FailureKind.INPUT_TOO_LONG, "long")])
    old = RESPONSES.decode(before(RESPONSES.encode(vectors), Vectors, "refused"))
    assert isinstance(old, Vectors) and (old.tokenize_us, old.refused) == (9, [])
    new = RESPONSES.decode(RESPONSES.encode(vectors))
    assert isinstance(new, Vectors) and new.refused == vectors.refused and new.array().shape == (1, 2)


def test_an_older_worker_reads_an_isolating_embed_as_a_plain_one() -> None:
    """A worker from before ``isolate`` ignores the trailing field (and fails the whole record for
    a refused input, which the gateway still handles: ``gateway/items.py``)."""

    class OldEmbed(msgspec.Struct, tag="embed", array_like=True):
        id: int
        model: str
        inputs: list[str]
        truncate: bool = True

    old = msgspec.msgpack.decode(REQUESTS.encode(Embed(5, "m", ["x"], truncate=False, isolate=True)), type=OldEmbed)
    assert (old.id, old.inputs, old.truncate) == (5, ["x"], False)
