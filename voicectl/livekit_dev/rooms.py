"""Rooms: who is in them, their dispatches, and when an empty room closes.

As livekit-server does it: a room nobody joined closes ``empty_timeout`` after it was created,
and one whose last participant left closes ``departure_timeout`` after that; agents (and
egress) do not keep a room open. The closing itself (ending dispatches, removing the
participants left) is the server's, passed in as ``on_expire``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livekit.protocol import models as models_pb
from livekit.protocol import room as room_pb

from voicectl.livekit_dev.ids import new_id
from voicectl.livekit_dev.participant import Participant

log = logging.getLogger("livekit-dev.rooms")


@dataclass(eq=False)
class Room:
    """A room's proto, its live dispatches and its participants (by identity)."""

    proto: models_pb.Room
    dispatch_ids: list[str] = field(default_factory=list)
    participants: dict[str, Participant] = field(default_factory=dict)
    ever_joined: bool = False
    #: the timeouts in force, in seconds: the request's, else the server's (which tests may
    #: shorten below a second; the proto carries whole seconds, as clients expect)
    empty_timeout: float = 0.0
    departure_timeout: float = 0.0
    closes_at: float | None = None
    _timer: asyncio.TimerHandle | None = None

    @property
    def name(self) -> str:
        return self.proto.name

    def active(self) -> list[Participant]:
        return [p for p in self.participants.values() if p.active]

    def keeps_open(self) -> bool:
        return any(not p.dependent for p in self.active())

    def current(self) -> models_pb.Room:
        """The proto with today's participant and publisher counts."""
        active = self.active()
        self.proto.num_participants = len(active)
        self.proto.num_publishers = sum(1 for p in active if p.tracks)
        return self.proto

    def snapshot(self) -> dict[str, Any]:
        p = self.current()
        return {
            "name": p.name, "sid": p.sid, "metadata": p.metadata,
            "created_at": p.creation_time, "num_participants": p.num_participants,
            "empty_timeout": self.empty_timeout, "departure_timeout": self.departure_timeout,
            "closes_at": self.closes_at, "dispatch_ids": list(self.dispatch_ids),
            "participants": [x.snapshot() for x in self.active()],
        }  # fmt: skip


class RoomRegistry:
    """The rooms by name, with the empty-room timers."""

    def __init__(
        self,
        empty_timeout: float,
        departure_timeout: float,
        on_expire: Callable[[Room], None],
    ) -> None:
        self.rooms: dict[str, Room] = {}
        self.empty_timeout = empty_timeout
        self.departure_timeout = departure_timeout
        self._on_expire = on_expire

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def create(self, name: str, req: room_pb.CreateRoomRequest | None = None) -> Room:
        """A new room (the caller checked it did not exist); its empty timer starts now."""
        req = req or room_pb.CreateRoomRequest(name=name)
        now = time.time()
        proto = models_pb.Room(
            sid=new_id("RM_"),
            name=name,
            empty_timeout=req.empty_timeout or max(1, round(self.empty_timeout)),
            departure_timeout=req.departure_timeout or max(1, round(self.departure_timeout)),
            max_participants=req.max_participants,
            creation_time=int(now),
            creation_time_ms=int(now * 1000),
            metadata=req.metadata,
        )
        room = self.rooms[name] = Room(
            proto, empty_timeout=float(req.empty_timeout or self.empty_timeout),
            departure_timeout=float(req.departure_timeout or self.departure_timeout))
        self._schedule(room, room.empty_timeout)
        log.info("room created name=%s sid=%s", name, proto.sid)
        return room

    def remove(self, room: Room) -> None:
        self._cancel(room)
        if self.rooms.get(room.name) is room:
            del self.rooms[room.name]

    def joined(self, room: Room, participant: Participant) -> None:
        room.participants[participant.identity] = participant
        if not participant.dependent:
            room.ever_joined = True
            self._cancel(room)

    def left(self, room: Room, participant: Participant) -> None:
        if room.participants.get(participant.identity) is participant:
            del room.participants[participant.identity]
        if not room.keeps_open() and room.closes_at is None:
            self._schedule(room, room.departure_timeout if room.ever_joined
                           else room.empty_timeout)

    def _schedule(self, room: Room, delay: float) -> None:
        self._cancel(room)
        loop = asyncio.get_running_loop()
        room.closes_at = time.time() + delay
        room._timer = loop.call_later(delay, self._expire, room)

    def _cancel(self, room: Room) -> None:
        if room._timer is not None:
            room._timer.cancel()
        room._timer, room.closes_at = None, None

    def _expire(self, room: Room) -> None:
        room._timer, room.closes_at = None, None
        if self.rooms.get(room.name) is not room or room.keeps_open():
            return
        log.info("room closed (empty) name=%s sid=%s", room.name, room.proto.sid)
        self._on_expire(room)
