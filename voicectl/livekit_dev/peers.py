"""The two aiortc peer connections of a participant, negotiated the way LiveKit clients expect.

The client offers on its publisher connection (we answer); we offer on its subscriber
connection (it answers), again whenever the tracks it receives change. Offers on one
connection are serialized: a change while an offer is out waits for the answer. aiortc puts
its own candidates in the SDP, so the server never trickles; the client may trickle before it
has our answer, so its candidates wait for the remote description.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable

import aioice.ice
from aiortc import (
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from livekit.protocol import rtc as rtc_pb

from voicectl.livekit_dev.media import forward_each_packet

log = logging.getLogger("livekit-dev.peers")

SendSignal = Callable[[rtc_pb.SignalResponse], Awaitable[None]]

_aioice_host_addresses = aioice.ice.get_host_addresses


def _host_addresses_with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """aioice skips loopback; add 127.0.0.1 so a browser allowed loopback ICE, or a host with
    nothing but ``lo``, can still connect (libwebrtc clients pick a real interface first)."""
    found = _aioice_host_addresses(use_ipv4, use_ipv6)
    return [*found, "127.0.0.1"] if use_ipv4 and "127.0.0.1" not in found else found


aioice.ice.get_host_addresses = _host_addresses_with_loopback


def new_connection() -> RTCPeerConnection:
    # no ICE servers at all: aiortc's default is a public STUN server, and this is one machine
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


class _Peer:
    """What both connections share: the pc, buffered trickle, closing."""

    target: int

    def __init__(self, send: SendSignal, label: str) -> None:
        self.pc = new_connection()
        self.send = send
        self.label = label
        self._early_candidates: list[dict] = []

    async def add_candidate(self, candidate_init: str) -> None:
        """A trickled candidate (JSON RTCIceCandidateInit), applied once we can."""
        try:
            init = json.loads(candidate_init)
        except ValueError:
            log.warning("%s: unreadable candidate %r", self.label, candidate_init[:80])
            return
        if self.pc.remoteDescription is None:
            self._early_candidates.append(init)
            return
        await self._apply_candidate(init)

    async def _apply_candidate(self, init: dict) -> None:
        text = init.get("candidate") or ""
        if not text:
            return  # end of candidates
        try:
            candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:")
                                           else text)
        except (ValueError, IndexError):
            log.warning("%s: unparsable candidate %r", self.label, text[:80])
            return
        candidate.sdpMid = init.get("sdpMid")
        candidate.sdpMLineIndex = init.get("sdpMLineIndex")
        with contextlib.suppress(Exception):  # a candidate for a closed or unknown m-line
            await self.pc.addIceCandidate(candidate)

    async def _flush_candidates(self) -> None:
        early, self._early_candidates = self._early_candidates, []
        for init in early:
            await self._apply_candidate(init)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.pc.close()


class PublisherPeer(_Peer):
    """The client's publishing connection: its offers, our answers, its tracks and channels."""

    target = rtc_pb.PUBLISHER

    def __init__(self, send: SendSignal, label: str) -> None:
        super().__init__(send, label)
        self._lock = asyncio.Lock()

    async def on_offer(self, offer: rtc_pb.SessionDescription) -> None:
        async with self._lock:
            await self.pc.setRemoteDescription(RTCSessionDescription(offer.sdp, offer.type))
            forward_each_packet(self.pc)
            await self._flush_candidates()
            await self.pc.setLocalDescription(await self.pc.createAnswer())
            local = self.pc.localDescription
            answer = rtc_pb.SessionDescription(type=local.type, sdp=local.sdp, id=offer.id)
            await self.send(rtc_pb.SignalResponse(answer=answer))


class SubscriberPeer(_Peer):
    """The connection we send on: one sendonly transceiver per track the client receives."""

    target = rtc_pb.SUBSCRIBER

    def __init__(self, send: SendSignal, label: str) -> None:
        super().__init__(send, label)
        self._lock = asyncio.Lock()
        self._awaiting_answer = False
        self._again = False
        self._offer_id = 0
        self.senders: dict[str, RTCRtpTransceiver] = {}  # by track sid
        self._offered: set[str] = set()  # track sids in the outstanding offer
        self.answered: set[str] = set()  # track sids the client has accepted
        # the server's side of data: created before the first offer so SCTP is negotiated
        self.channels: dict[str, RTCDataChannel] = {
            "_reliable": self.pc.createDataChannel("_reliable", ordered=True),
            "_lossy": self.pc.createDataChannel("_lossy", ordered=False, maxRetransmits=0),
        }

    def add_track(self, track: MediaStreamTrack, participant_sid: str, track_sid: str) -> None:
        """Send ``track``; its msid is ``PA_…|TR_…`` / ``TR_…`` as the SDKs expect.

        Always a new transceiver: aiortc stops a sender whose transceiver went inactive and
        never starts it again, so a reused one would carry silence.
        """
        transceiver = self.pc.addTransceiver(track, direction="sendonly")
        # aiortc has no API for the msid stream id; the SDKs read the participant sid from it
        transceiver.sender._stream_id = f"{participant_sid}|{track_sid}"
        self.senders[track_sid] = transceiver

    def remove_track(self, track_sid: str) -> bool:
        """Stop sending a track; its transceiver goes inactive for good."""
        transceiver = self.senders.pop(track_sid, None)
        self.answered.discard(track_sid)
        if transceiver is None:
            return False
        track = transceiver.sender.track
        transceiver.sender.replaceTrack(None)
        transceiver.direction = "inactive"
        if track is not None:
            track.stop()
        return True

    async def negotiate(self) -> None:
        """Offer the current tracks now, or after the outstanding offer is answered."""
        async with self._lock:
            if self._awaiting_answer:
                self._again = True
                return
            if self.pc.connectionState == "closed":
                return
            await self.pc.setLocalDescription(await self.pc.createOffer())
            self._awaiting_answer = True
            self._offered = set(self.senders)
            self._offer_id += 1
            local = self.pc.localDescription
            offer = rtc_pb.SessionDescription(type=local.type, sdp=local.sdp, id=self._offer_id)
            await self.send(rtc_pb.SignalResponse(offer=offer))

    async def on_answer(self, answer: rtc_pb.SessionDescription) -> set[str]:
        """Apply the client's answer; returns the track sids it accepted just now."""
        async with self._lock:
            if not self._awaiting_answer:
                log.warning("%s: answer without an offer; ignored", self.label)
                return set()
            await self.pc.setRemoteDescription(RTCSessionDescription(answer.sdp, answer.type))
            await self._flush_candidates()
            self._awaiting_answer = False
            again, self._again = self._again, False
            new = (self._offered & set(self.senders)) - self.answered
            self.answered = self._offered & set(self.senders)
        if again:
            await self.negotiate()
        return new
