"""The audio relay: one reader per published track, fanned out to each subscriber's sender.

aiortc's ``MediaRelay`` falls short here: it reads its source only while a consumer exists, so
a track published into an empty room piles up decoded frames in the receiver's unbounded queue
and the first subscriber then hears seconds-old audio. This reader drains the source from the
moment the track arrives, and each subscriber gets a short bounded queue that drops its oldest
frame when the sender falls behind: late audio is worse than a lost 20 ms frame in a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger("livekit-dev.media")

#: frames a subscriber may lag behind (20 ms each) before the oldest is dropped
SUBSCRIBER_QUEUE_FRAMES = 25


class RelayedAudio(MediaStreamTrack):
    """What one subscriber's sender reads: the source's frames, with the track's sid as id."""

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
