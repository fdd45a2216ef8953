"""The audio relay: each published track's Opus packets, forwarded as received to subscribers.

An SFU forwards packets; it does not transcode them. aiortc decodes every received frame and
re-encodes it for every sender, and computes each sent frame's RFC 6465 audio level in a
Python loop over its samples: on an idle two-party call that was half a CPU core (measured
with py-spy: 37% of the server's samples in the level loop, 10% in the encoder), taken from the
agent's speech recognition on a 2-core machine, plus a decoder thread hop and an encode on
every 20 ms. aiortc has no passthrough setting, but its sender sends a pre-encoded
``av.Packet`` as it is; so the receiver's Opus decoder is replaced by `OpusForward`, which
hands each received frame on as a packet with its RTP timestamp (gaps, DTX and FEC reach the
subscriber's own jitter buffer untouched). Every LiveKit client publishes Opus and aiortc
offers it first, so both ends of the relay speak it.

aiortc's ``MediaRelay`` falls short here too: it reads its source only while a consumer exists,
so a track published into an empty room piles up frames in the receiver's unbounded queue and
the first subscriber then hears seconds-old audio. This reader drains the source from the
moment the track arrives, and each subscriber gets a short bounded queue that drops its oldest
packet when the sender falls behind: late audio is worse than a lost 20 ms frame in a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from fractions import Fraction

import aiortc.rtcrtpreceiver
import av
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcpeerconnection import RTCPeerConnection
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from aiortc.rtp import RtpPacket

log = logging.getLogger("livekit-dev.media")

#: frames a subscriber may lag behind (20 ms each) before the oldest is dropped
SUBSCRIBER_QUEUE_FRAMES = 25
#: Opus RTP timestamps count 48 kHz samples whatever the audio's rate (RFC 7587)
OPUS_TIME_BASE = Fraction(1, 48000)


class OpusForward(Decoder):
    """A "decoder" that decodes nothing: the received Opus frame, as a packet to send on."""

    def decode(self, encoded_frame: JitterFrame) -> list[av.Packet]:  # type: ignore[override]
        packet = av.Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = OPUS_TIME_BASE
        return [packet]


_aiortc_get_decoder = aiortc.rtcrtpreceiver.get_decoder


def _forwarding_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    if codec.mimeType.lower() == "audio/opus":
        return OpusForward()
    return _aiortc_get_decoder(codec)


class PacketPerFrame:
    """The receiver's jitter buffer for audio: every RTP packet is a whole Opus frame, on now.

    aiortc's buffer releases a frame only once a packet of the next one arrives (it was
    written for video frames split over packets), so it holds every audio frame one packet
    interval, 20 ms, beyond its prefetch (4 frames by default), on a path where the
    subscriber's own jitter buffer reorders and smooths anyway. Measured with tone onsets
    between two rtc clients: 94 ms one way decoding and re-encoding, 70 ms forwarding through
    aiortc's buffer, 53 ms with this one.
    """

    def add(self, packet: RtpPacket) -> tuple[bool, JitterFrame | None]:
        """(no picture lost, the frame): all the receiver asks of its buffer."""
        data = getattr(packet, "_data", b"")  # the depayloaded frame (aiortc sets it)
        return False, (JitterFrame(data=data, timestamp=packet.timestamp) if data else None)


def forward_each_packet(pc: RTCPeerConnection) -> None:
    """Give the audio receivers of `pc` a `PacketPerFrame` buffer (aiortc has no setting)."""
    for transceiver in pc.getTransceivers():
        receiver = transceiver.receiver
        if transceiver.kind == "audio" and not isinstance(
                getattr(receiver, "_RTCRtpReceiver__jitter_buffer", None), PacketPerFrame):
            receiver._RTCRtpReceiver__jitter_buffer = PacketPerFrame()  # type: ignore[attr-defined]


def forward_opus() -> None:
    """Make this process's aiortc receivers hand on Opus packets instead of decoded audio."""
    aiortc.rtcrtpreceiver.get_decoder = _forwarding_decoder


class RelayedAudio(MediaStreamTrack):
    """What one subscriber's sender reads: the source's packets, with the track's sid as id."""

    kind = "audio"

    def __init__(self, fanout: AudioFanout, track_sid: str) -> None:
        super().__init__()
        self._fanout = fanout
        self._track_sid = track_sid
        self._queue: asyncio.Queue = asyncio.Queue(SUBSCRIBER_QUEUE_FRAMES)
        self.dropped = 0

    @property
    def id(self) -> str:  # the SDKs match the msid track id to the TrackInfo's sid
        return self._track_sid

    def push(self, frame: object) -> None:
        if self._queue.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                self._queue.get_nowait()
                self.dropped += 1
        self._queue.put_nowait(frame)

    async def recv(self):  # type: ignore[override]
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._queue.get()
        if frame is None:
            self.stop()
            raise MediaStreamError
        return frame

    def stop(self) -> None:
        self._fanout.unsubscribe(self)
        super().stop()


class AudioFanout:
    """Reads one remote track for as long as it lives and copies each frame to subscribers."""

    def __init__(self, source: MediaStreamTrack, track_sid: str) -> None:
        self.source = source
        self.track_sid = track_sid
        self.frames = 0
        self._subscribers: set[RelayedAudio] = set()
        self._task = asyncio.ensure_future(self._run())

    def subscribe(self) -> RelayedAudio:
        track = RelayedAudio(self, self.track_sid)
        self._subscribers.add(track)
        return track

    def unsubscribe(self, track: RelayedAudio) -> None:
        self._subscribers.discard(track)

    async def _run(self) -> None:
        try:
            while True:
                try:
                    frame = await self.source.recv()
                except MediaStreamError:
                    break
                self.frames += 1
                for sub in list(self._subscribers):
                    sub.push(frame)
        finally:
            for sub in list(self._subscribers):
                sub.push(None)
            log.debug("track %s ended after %d frames", self.track_sid, self.frames)

    def close(self) -> None:
        """Stop reading; subscribers see the end of their track."""
        self._task.cancel()
        for sub in list(self._subscribers):
            sub.push(None)
