"""A caller in a LiveKit room: joins, has the agent dispatched, speaks a recording, listens.

What a person on a call feels is measured where they sit: the recording is published as a
microphone at real-time pace (then silence, as a person waits), the agent's audio is recorded
as it arrives, and the voice-to-voice time runs from the last voiced sample of the caller's
speech to the first non-silent sample of the agent's reply *received by the caller*, both on
this machine's clock. What the agent heard and said comes from its ``lk.transcription`` text
streams, as LiveKit's own clients read them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from agent.config import Settings
from voicectl.errors import VoicectlError

if TYPE_CHECKING:  # pragma: no cover
    from livekit import rtc

#: the caller's microphone (read_wav gives 16 kHz mono)
MIC_RATE = 16000
#: what the caller's side receives and records
RX_RATE = 48000
FRAME_S = 0.01
#: |sample| above which the caller's own recording counts as voiced
VOICED_PEAK = 500
#: RMS of a 10 ms received chunk above which the agent's audio counts as sound
SOUND_RMS = 200.0
TRANSCRIPTION_TOPIC = "lk.transcription"
ATTR_TRACK = "lk.transcribed_track_id"
ATTR_FINAL = "lk.transcription_final"
ATTR_STATE = "lk.agent.state"


class CallError(VoicectlError):
    """The call could not be made or heard nothing; the message says why."""


@dataclass
class CallResult:
    """What happened on the call; times in milliseconds, clocks of this machine."""

    room: str
    identity: str
    agent_identity: str = ""
    heard: str = ""  # the agent's transcript of the caller
    reply: str = ""  # what the agent said
    v2v_ms: float | None = None
    speech_s: float = 0.0
    reply_audio_s: float = 0.0
    connect_ms: float = 0.0
    agent_join_ms: float = 0.0
    heard_after_ms: float | None = None  # end of speech → final transcript received
    reply_pcm: bytes = b""
    started_at: float = 0.0
    states: list[tuple[float, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "room": self.room, "identity": self.identity, "agent_identity": self.agent_identity,
            "heard": self.heard, "reply": self.reply,
            "v2v_ms": None if self.v2v_ms is None else round(self.v2v_ms, 1),
            "speech_s": round(self.speech_s, 3), "reply_audio_s": round(self.reply_audio_s, 3),
            "connect_ms": round(self.connect_ms, 1), "agent_join_ms": round(self.agent_join_ms, 1),
            "heard_after_ms": None if self.heard_after_ms is None
            else round(self.heard_after_ms, 1),
            "agent_states": [{"after_ms": round(t, 1), "state": s} for t, s in self.states],
        }  # fmt: skip


def voiced_end(pcm: np.ndarray, rate: int) -> float:
    """Seconds into the recording of its last voiced sample (ValueError when silent)."""
    voiced = np.nonzero(np.abs(pcm.astype(np.int32)) > VOICED_PEAK)[0]
    if not len(voiced):
        raise ValueError("the recording is silent: nothing to say")
    return (int(voiced[-1]) + 1) / rate


def first_sound(chunks: list[tuple[float, np.ndarray]], after: float) -> float | None:
    """Wall time of the first received 10 ms that is sound, among chunks arriving after."""
    step = int(RX_RATE * FRAME_S)
    for arrived, samples in chunks:
        if arrived < after:
            continue
        for i in range(0, len(samples), step):
            part = samples[i:i + step].astype(np.float64)
            if len(part) and float(np.sqrt(np.mean(part**2))) > SOUND_RMS:
                # the chunk's samples played out up to its arrival: place sample i in it
                return arrived - (len(samples) - i) / RX_RATE
    return None


def new_room_name() -> str:
    return f"talk-{uuid.uuid4().hex[:8]}"


class Caller:
    """One call: ``await Caller(...).run(pcm)`` → CallResult, or CallError with the reason."""

    def __init__(self, settings: Settings, room: str, *, agent_name: str, dispatch: bool = True,
                 identity: str | None = None, join_timeout: float = 30.0,
                 reply_timeout: float = 30.0, metadata: str = "") -> None:
        self.settings = settings
        self.room_name = room
        self.agent_name = agent_name
        self.dispatch = dispatch
        self.identity = identity or f"caller-{uuid.uuid4().hex[:6]}"
        self.join_timeout = join_timeout
        self.reply_timeout = reply_timeout
        self.metadata = metadata
        self.result = CallResult(room=room, identity=self.identity)
        self._chunks: list[tuple[float, np.ndarray]] = []
        self._agent: rtc.RemoteParticipant | None = None
        self._agent_track: asyncio.Future[rtc.RemoteAudioTrack] | None = None
        self._mic_sid = ""
        self._agent_track_sid = ""
        self._final_heard: asyncio.Event | None = None
        self._replies: list[tuple[float, str]] = []
        self._heard: list[tuple[float, str]] = []
        self._state_changed: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ the call

    async def run(self, pcm: np.ndarray) -> CallResult:
        import logging

        from livekit import rtc

        # the SDK warns on every connect that /rtc/v1 is missing (the dev server's way of
        # choosing /rtc): not the caller's business
        logging.getLogger("livekit").setLevel(logging.ERROR)

        speech_end = voiced_end(pcm, MIC_RATE)
        self.result.speech_s = speech_end
        self._agent_track = asyncio.get_running_loop().create_future()
        self._final_heard = asyncio.Event()
        self._state_changed = asyncio.Event()
        room = rtc.Room()
        self._wire(room)
        self.result.started_at = t0 = time.time()
        try:
            await self._connect(room)
            self.result.connect_ms = (time.time() - t0) * 1000
            since = time.time()
            if self.dispatch:
                await self._dispatch()
            track = await self._wait_for_agent(room, since)
            self.result.agent_join_ms = (time.time() - since) * 1000
            recorder = asyncio.create_task(self._record(track))
            try:
                eos = await self._speak(room, pcm, speech_end)
                await self._wait_for_reply(eos)
            finally:
                recorder.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await recorder
            self._finish(eos)
        finally:
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await room.disconnect()
        return self.result

    async def _connect(self, room: rtc.Room) -> None:
        from datetime import timedelta

        from livekit import rtc

        from voicectl.livekit_ops import join_token

        token = join_token(self.settings, self.room_name, self.identity, timedelta(minutes=30),
                           name="voicectl talk")["token"]
        try:
            await asyncio.wait_for(room.connect(self.settings.livekit_url, token,
                                                rtc.RoomOptions(auto_subscribe=True)), 15)
        except Exception as exc:  # noqa: BLE001 - ConnectError, timeouts, refused sockets
            raise CallError(f"cannot join room {self.room_name!r} at "
                            f"{self.settings.livekit_url}: {exc or type(exc).__name__}") from None

    async def _dispatch(self) -> None:
        from voicectl.livekit_ops import dispatch_async

        await dispatch_async(self.settings, self.room_name, self.agent_name, self.metadata,
                             create_room=False)

    def _wire(self, room: rtc.Room) -> None:
        from livekit import rtc

        @room.on("track_subscribed")
        def on_track(track: rtc.Track, pub: rtc.RemoteTrackPublication,
                     participant: rtc.RemoteParticipant) -> None:
            if (self._is_our_agent(participant) and track.kind == rtc.TrackKind.KIND_AUDIO
                    and self._agent_track is not None and not self._agent_track.done()):
                self._agent = participant
                self._agent_track_sid = track.sid
                self._agent_track.set_result(track)  # type: ignore[arg-type]

        @room.on("participant_attributes_changed")
        def on_attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
            if participant is self._agent and ATTR_STATE in changed:
                since = (time.time() - self.result.started_at) * 1000
                self.result.states.append((since, changed[ATTR_STATE]))
                if self._state_changed is not None:
                    self._state_changed.set()

        def on_text(reader: rtc.TextStreamReader, identity: str) -> None:
            task = asyncio.ensure_future(self._read_text(reader))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        room.register_text_stream_handler(TRANSCRIPTION_TOPIC, on_text)

    def _is_our_agent(self, participant: rtc.RemoteParticipant) -> bool:
        from livekit import rtc

        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return False
        name = participant.attributes.get("lk.agent_name")
        return name in (None, "", self.agent_name)

    async def _read_text(self, reader: rtc.TextStreamReader) -> None:
        text = await reader.read_all()
        attrs = reader.info.attributes or {}
        if attrs.get(ATTR_FINAL, "true") != "true":
            return
        now = time.time()
        track = attrs.get(ATTR_TRACK, "")
        if track and track == self._mic_sid:
            self._heard.append((now, text.strip()))
            if self._final_heard is not None:
                self._final_heard.set()
        elif text.strip():
            self._replies.append((now, text.strip()))

    async def _wait_for_agent(self, room: rtc.Room, since: float) -> rtc.RemoteAudioTrack:
        """The agent's audio track, then its ``listening`` state (it hears from then on)."""
        assert self._agent_track is not None and self._state_changed is not None
        try:
            track = await asyncio.wait_for(asyncio.shield(self._agent_track), self.join_timeout)
        except TimeoutError:
            raise CallError(self._no_agent_reason(room, since)) from None
        deadline = time.monotonic() + min(10.0, self.join_timeout)
        while self._agent is not None and self._agent.attributes.get(ATTR_STATE) != "listening":
            self._state_changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                break  # an agent that never says it listens still gets spoken to
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), left)
        return track

    def _no_agent_reason(self, room: rtc.Room, since: float) -> str:
        from agent.events import find_since

        base = f"no agent {self.agent_name!r} joined room {self.room_name!r} within " \
               f"{self.join_timeout:g} s"
        job = find_since(self.settings.events_path, since,
                         lambda r: r["event"] == "job" and r.get("room") == self.room_name)
        if job is not None and not job.get("accepted"):
            return f"{base}: the worker declined the job ({job.get('reason')})"
        if job is not None:
            return f"{base}: the worker accepted the job but its agent did not publish audio " \
                   "(see voicectl logs agent)"
        others = [p.identity for p in room.remote_participants.values()]
        extra = f"; in the room: {', '.join(others)}" if others else ""
        return f"{base}: no worker took the job (is the agent running? voicectl status, " \
               f"voicectl dispatch --wait){extra}"

    async def _speak(self, room: rtc.Room, pcm: np.ndarray, speech_end: float) -> float:
        """Publish the recording at real-time pace; returns the wall time its speech ended."""
        from livekit import rtc

        source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=40)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        publication = await room.local_participant.publish_track(track, options)
        self._mic_sid = publication.sid
        await asyncio.sleep(0.3)  # the agent subscribes before the first word
        step = int(MIC_RATE * FRAME_S)
        start = time.time()
        for i in range(0, len(pcm), step):
            delay = start + i / MIC_RATE - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            chunk = pcm[i:i + step]
            if len(chunk) < step:
                chunk = np.pad(chunk, (0, step - len(chunk)))
            await source.capture_frame(rtc.AudioFrame(chunk.tobytes(), MIC_RATE, 1, step))
        eos = start + speech_end
        self._silence = asyncio.create_task(self._keep_silent(source, step))
        self._tasks.add(self._silence)
        return eos

    async def _keep_silent(self, source: rtc.AudioSource, step: int) -> None:
        """Silence after the question, at real-time pace: a microphone never stops."""
        from livekit import rtc

        zero = np.zeros(step, dtype=np.int16).tobytes()
        start = time.time()
        n = 0
        while True:
            delay = start + n * FRAME_S - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await source.capture_frame(rtc.AudioFrame(zero, MIC_RATE, 1, step))
            n += 1

    async def _record(self, track: rtc.RemoteAudioTrack) -> None:
        from livekit import rtc

        stream = rtc.AudioStream(track, sample_rate=RX_RATE, num_channels=1)
        try:
            async for event in stream:
                samples = np.frombuffer(event.frame.data, dtype=np.int16).copy()
                self._chunks.append((time.time(), samples))
        finally:
            await stream.aclose()

    async def _wait_for_reply(self, eos: float) -> None:
        """Until the agent spoke and went back to listening, or the reply timeout."""
        assert self._state_changed is not None
        deadline = time.monotonic() + self.reply_timeout
        spoke = False
        while time.monotonic() < deadline:
            state = self._agent.attributes.get(ATTR_STATE) if self._agent else None
            spoke = spoke or state == "speaking"
            if spoke and state in ("listening", "idle") and self._replies:
                break
            self._state_changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._state_changed.wait(), 0.2)
        await asyncio.sleep(0.3)  # the reply's tail and its transcript

    def _finish(self, eos: float) -> None:
        result = self.result
        result.agent_identity = self._agent.identity if self._agent else ""
        result.heard = " ".join(text for _, text in self._heard)
        result.reply = " ".join(text for _, text in self._replies)
        if self._heard:
            result.heard_after_ms = (self._heard[0][0] - eos) * 1000
        onset = first_sound(self._chunks, eos)
        if onset is not None:
            result.v2v_ms = max(0.0, onset - eos) * 1000
            reply = np.concatenate([s for t, s in self._chunks if t >= onset]) \
                if self._chunks else np.zeros(0, dtype=np.int16)
            result.reply_pcm = reply.tobytes()
            result.reply_audio_s = len(reply) / RX_RATE
        if not result.heard:
            raise CallError(f"the agent joined but sent no transcript of the speech within "
                            f"{self.reply_timeout:g} s (is its STT working? voicectl logs "
                            "agent)")
        if result.v2v_ms is None:
            raise CallError(f"the agent heard {result.heard!r} but no reply audio arrived "
                            f"within {self.reply_timeout:g} s (voicectl logs agent)")
