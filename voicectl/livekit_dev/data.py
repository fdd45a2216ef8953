"""Data packets: from a participant's publisher channel to the others' subscriber channels.

Text streams, byte streams, RPC and chat are all DataPackets, so routing them is all the server
does: stamp the sender's identity and sid (clients trust the server's, not their own), honour
``destination_identities``, and send on the channel of the kind it came in on (``_reliable``
or ``_lossy``). A channel not open yet holds the packets until it opens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from aiortc import RTCDataChannel
from google.protobuf.message import DecodeError
from livekit.protocol import models as models_pb

from voicectl.livekit_dev.participant import Participant

log = logging.getLogger("livekit-dev.data")

#: packets held per closed channel before the oldest is dropped
MAX_HELD = 256


def stamp(packet: models_pb.DataPacket, sender: Participant) -> None:
    packet.participant_identity = sender.identity
    packet.participant_sid = sender.sid
    if packet.HasField("user"):
        packet.user.participant_identity = sender.identity
        packet.user.participant_sid = sender.sid


def recipients(packet: models_pb.DataPacket, sender: Participant,
               others: Iterable[Participant]) -> list[Participant]:
    wanted = set(packet.destination_identities)
    if packet.HasField("user"):
        wanted |= set(packet.user.destination_identities)
        sids = set(packet.user.destination_sids)
    else:
        sids = set()
    out = []
    for p in others:
        if p is sender or not p.active or p.subscriber is None:
            continue
        if (wanted or sids) and p.identity not in wanted and p.sid not in sids:
            continue
        out.append(p)
    return out


def send_on(channel: RTCDataChannel, data: bytes, held: dict[int, list[bytes]]) -> None:
    """Send now, or once the channel opens (aiortc buffers nothing before that)."""
    if channel.readyState == "open":
        channel.send(data)
        return
    if channel.readyState != "connecting":
        return
    queue = held.setdefault(id(channel), [])
    if not queue:
        @channel.on("open")
        def _flush() -> None:
            for item in held.pop(id(channel), []):
                channel.send(item)
    queue.append(data)
    del queue[:-MAX_HELD]


class DataRouter:
    """Routes one room's packets; ``held`` keeps what waits for a channel to open."""

    def __init__(self) -> None:
        self.held: dict[int, list[bytes]] = {}
        self.routed = 0

    def route(self, raw: bytes, label: str, sender: Participant,
              others: Iterable[Participant]) -> None:
        try:
            packet = models_pb.DataPacket.FromString(raw)
        except DecodeError:
            log.warning("unreadable data packet from %s on %s", sender.identity, label)
            return
        if not sender.permission.can_publish_data:
            log.info("data from %s dropped: no canPublishData", sender.identity)
            return
        stamp(packet, sender)
        data = packet.SerializeToString()
        channel_name = "_lossy" if label == "_lossy" else "_reliable"
        for p in recipients(packet, sender, others):
            channel = p.subscriber.channels.get(channel_name) if p.subscriber else None
            if channel is not None:
                send_on(channel, data, self.held)
                self.routed += 1
