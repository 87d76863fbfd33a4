"""Shared-memory IPC between the gateway and its workers.

``ring``: one single-producer/single-consumer byte ring (framing, publication, memory ordering).
``channel``: a worker's pair of rings in one ``/dev/shm`` segment, with eventfd doorbells, the
gateway's event-loop reader, the worker's blocking reader and the stale-segment sweep.
"""

from appliance.ipc.channel import Channel, ChannelSpec, sweep_stale_segments
from appliance.ipc.ring import RecordTooLarge, Ring, RingCorrupted

__all__ = ["Channel", "ChannelSpec", "RecordTooLarge", "Ring", "RingCorrupted", "sweep_stale_segments"]
