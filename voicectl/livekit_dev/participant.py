"""A participant in a room: who it is, what it publishes, and its two peer connections."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from livekit.protocol import models as models_pb
from livekit.protocol import rtc as rtc_pb

if TYPE_CHECKING:
    from voicectl.livekit_dev.media import AudioFanout
    from voicectl.livekit_dev.peers import PublisherPeer, SubscriberPeer



class SignalLink(Protocol):
    """A participant's signal connection, as the server uses it (signaling.SignalConnection)."""

    async def send(self, msg: rtc_pb.SignalResponse) -> None: ...

    async def close(self) -> None: ...


KINDS = {
    "": models_pb.ParticipantInfo.STANDARD,
    "standard": models_pb.ParticipantInfo.STANDARD,
    "ingress": models_pb.ParticipantInfo.INGRESS,
    "egress": models_pb.ParticipantInfo.EGRESS,
    "sip": models_pb.ParticipantInfo.SIP,
    "agent": models_pb.ParticipantInfo.AGENT,
}
#: kinds that do not keep a room open (pkg/rtc: IsDependent)
DEPENDENT_KINDS = {models_pb.ParticipantInfo.AGENT, models_pb.ParticipantInfo.EGRESS}


@dataclass(eq=False)
class TrackPub:
    """A published track: its TrackInfo, the client's cid, and the relay once media arrives."""

    info: models_pb.TrackInfo
    cid: str
    owner: Participant
    fanout: AudioFanout | None = None

    @property
    def sid(self) -> str:
        return self.info.sid


@dataclass(eq=False)
class Participant:
    """One joined client. ``tracks`` are published (media arrived), ``pending`` announced only."""

    sid: str
    identity: str
    room_name: str
    name: str = ""
    kind: int = models_pb.ParticipantInfo.STANDARD
    metadata: str = ""
    attributes: dict[str, str] = field(default_factory=dict)
    permission: models_pb.ParticipantPermission = field(
        default_factory=models_pb.ParticipantPermission
    )
    auto_subscribe: bool = True
    client_protocol: int = 0
    sdk: str = ""
    joined_at: float = field(default_factory=time.time)
    state: int = models_pb.ParticipantInfo.JOINING
    version: int = 0
    tracks: dict[str, TrackPub] = field(default_factory=dict)
    pending: dict[str, TrackPub] = field(default_factory=dict)  # by cid
    #: media whose AddTrackRequest has not come yet (by cid): published when it does
    orphans: dict[str, Any] = field(default_factory=dict)
    signal: SignalLink | None = None
    publisher: PublisherPeer | None = None
    subscriber: SubscriberPeer | None = None
    #: track sids this participant receives, and the ones it turned off (UpdateSubscription)
    subscribed: set[str] = field(default_factory=set)
    unsubscribed: set[str] = field(default_factory=set)
    #: subscribed tracks whose publisher is told once the subscriber connection is up
    unconfirmed: set[str] = field(default_factory=set)

    @property
    def dependent(self) -> bool:
        return self.kind in DEPENDENT_KINDS

    @property
    def active(self) -> bool:
        return self.state != models_pb.ParticipantInfo.DISCONNECTED

    def info(self) -> models_pb.ParticipantInfo:
        """The ParticipantInfo to send; each call bumps ``version``, as the real server does."""
        self.version += 1
        return models_pb.ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            state=self.state,
            tracks=[t.info for t in self.tracks.values()],
            metadata=self.metadata,
            joined_at=int(self.joined_at),
            joined_at_ms=int(self.joined_at * 1000),
            version=self.version,
            permission=self.permission,
            is_publisher=bool(self.tracks),
            kind=self.kind,
            attributes=self.attributes,
            client_protocol=self.client_protocol,
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "sid": self.sid, "identity": self.identity, "name": self.name,
            "kind": models_pb.ParticipantInfo.Kind.Name(self.kind).lower(),
            "state": models_pb.ParticipantInfo.State.Name(self.state).lower(),
            "attributes": dict(self.attributes), "sdk": self.sdk, "joined_at": self.joined_at,
            "tracks": [
                {"sid": t.sid, "cid": t.cid, "name": t.info.name, "muted": t.info.muted,
                 "frames": t.fanout.frames if t.fanout else 0}
                for t in self.tracks.values()
            ],
            "subscribed": sorted(self.subscribed),
        }  # fmt: skip
