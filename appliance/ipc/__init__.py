"""Shared-memory IPC between the gateway and its workers, one module per concept.

``ring``: one single-producer/single-consumer byte ring (framing, publication, memory ordering).
``segment``: the ``/dev/shm`` file a channel lives in: pid-tagged 0600 name, layout and header,
attach checks, and the sweep of segments a killed run left behind.
``doorbell``: the eventfd doorbells, the park/ring protocol (why every sleep is bounded, why
spins yield) and the spin policy.
``channel``: a worker's channel, two rings and two doorbells in one segment, with the gateway's
event-loop reader and the worker's blocking reader, and the room signal: a worker that drains a
request ring the gateway found full rings the response doorbell, so no sender polls for space.

Imports: the standard library, psutil and ``appliance.protocol``; never ``gateway`` or
``workers``.
"""

from appliance.ipc.channel import Channel
from appliance.ipc.doorbell import Doorbell, SpinPolicy
from appliance.ipc.ring import RecordTooLarge, Ring, RingCorrupted
from appliance.ipc.segment import Segment, sweep_stale_segments
from appliance.protocol import ChannelSpec

__all__ = [
    "Channel",
    "ChannelSpec",
    "Doorbell",
    "RecordTooLarge",
    "Ring",
    "RingCorrupted",
    "Segment",
    "SpinPolicy",
    "sweep_stale_segments",
]
