"""appliance/protocol.py's evolution rule for the lent cores: fields appended with a default, so a
record from an older gateway or worker still decodes, and a new one round-trips."""

from __future__ import annotations

import msgspec

from appliance.protocol import Embed, RequestCodec, Rerank, ResponseCodec, Stats, WorkerCounters

REQUESTS, RESPONSES = RequestCodec(), ResponseCodec()


def without_last_field(record: bytes) -> bytes:
    """``record`` as a gateway from before its message's last field would have written it."""
    fields = msgspec.msgpack.decode(record)
    assert isinstance(fields, list)  # array_like: [tag, field, ...]
    return msgspec.msgpack.encode(fields[:-1])


def test_an_older_gateway_s_embed_and_rerank_lend_no_cores() -> None:
    embed = Embed(7, "m", ["text"], sent=1.5, spare_cores=[1, 2])
    rerank = Rerank(8, "m", "query", ["doc"], sent=2.5, spare_cores=[3])
    old_embed = REQUESTS.decode(without_last_field(REQUESTS.encode(embed)))
    old_rerank = REQUESTS.decode(without_last_field(REQUESTS.encode(rerank)))
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
