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
from agent.voice_measure import first_sound_offset, voiced_end
from voicectl.errors import VoicectlError

if TYPE_CHECKING:  # pragma: no cover
    from livekit import rtc

#: the caller's microphone (read_wav gives 16 kHz mono)
MIC_RATE = 16000
#: what the caller's side receives and records
RX_RATE = 48000
FRAME_S = 0.01
TRANSCRIPTION_TOPIC = "lk.transcription"
ATTR_TRACK = "lk.transcribed_track_id"
ATTR_FINAL = "lk.transcription_final"
ATTR_STATE = "lk.agent.state"


class CallError(VoicectlError):
    """The call could not be made or heard nothing; the message says why."""


@dataclass
class Exchange:
    """One question and its answer; times in milliseconds, this machine's clock."""

    heard: str = ""  # the agent's transcript of the caller
    reply: str = ""  # what the agent said
    v2v_ms: float | None = None
    heard_after_ms: float | None = None  # end of speech → final transcript received
    speech_s: float = 0.0
    reply_audio_s: float = 0.0
    reply_pcm: bytes = b""
    asked_at: float = 0.0  # wall time the question started
    speech_end_at: float = 0.0
    states: list[tuple[float, str]] = field(default_factory=list)  # (ms after asked_at, state)


@dataclass
class CallResult:
    """A call of one exchange, as `voicectl talk` reports it."""

    room: str
    identity: str
    agent_identity: str
    connect_ms: float
    agent_join_ms: float
    exchange: Exchange

    def to_json(self) -> dict[str, Any]:
        x = self.exchange

        def ms(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return {
            "room": self.room, "identity": self.identity, "agent_identity": self.agent_identity,
            "heard": x.heard, "reply": x.reply, "v2v_ms": ms(x.v2v_ms),
            "heard_after_ms": ms(x.heard_after_ms), "speech_s": round(x.speech_s, 3),
            "reply_audio_s": round(x.reply_audio_s, 3), "connect_ms": ms(self.connect_ms),
            "agent_join_ms": ms(self.agent_join_ms),
            "agent_states": [{"after_ms": round(t, 1), "state": st} for t, st in x.states],
        }  # fmt: skip


def first_sound(chunks: list[tuple[float, np.ndarray]], after: float) -> float | None:
    """Wall time of the first received 10 ms that is sound, among chunks arriving after."""
    for arrived, samples in chunks:
        if arrived < after:
            continue
        offset = first_sound_offset(samples, RX_RATE)
        if offset is not None:
            # the chunk's samples played out up to its arrival: place the sound in it
            return arrived - len(samples) / RX_RATE + offset
    return None


def new_room_name() -> str:
    return f"talk-{uuid.uuid4().hex[:8]}"


class Caller:
    """A caller in a room, step by step: ``join``, ``summon`` the agent, ``ask``, ``leave``.

    The microphone stays live between questions (silence, at real-time pace), and the
    agent's audio is recorded from the moment its track arrives, again after it rejoins.
    """

    def __init__(self, settings: Settings, room: str, *, agent_name: str,
                 identity: str | None = None, join_timeout: float = 30.0,
                 reply_timeout: float = 30.0, metadata: str = "") -> None:
        self.settings = settings
        self.room_name = room
        self.agent_name = agent_name
        self.identity = identity or f"caller-{uuid.uuid4().hex[:6]}"
        self.join_timeout = join_timeout
        self.reply_timeout = reply_timeout
        self.metadata = metadata
        self.connect_ms = 0.0
        self.agent_join_ms = 0.0
        self.agent: rtc.RemoteParticipant | None = None
        self.agent_left = asyncio.Event()
        self._room: rtc.Room | None = None
        self._source: rtc.AudioSource | None = None
        self._mic_sids: set[str] = set()  # a full reconnect publishes the microphone anew
        self._heard_by_agent: set[str] = set()  # microphone sids the agent subscribed to
        self._chunks: list[tuple[float, np.ndarray]] = []
        self._texts: list[tuple[float, bool, str]] = []  # (arrived, of the caller?, text)
        self._states: list[tuple[float, str]] = []  # (arrived, the agent's lk.agent.state)
        self._changed = asyncio.Event()  # any agent, track, state or transcript news
        self._asking = False  # a question, not the silence, has the microphone
        self._mic = asyncio.Lock()  # one capture at a time: the SDK refuses overlapping ones
        self._recorder: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Caller:
        await self.join()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.leave()

    # ------------------------------------------------------------------ steps

    async def join(self) -> None:
        """Connect and publish a live (silent) microphone."""
        import logging
        from datetime import timedelta

        from livekit import rtc

        from voicectl.livekit.api import join_token

        # the SDK warns on every connect that /rtc/v1 is missing (the dev server's way of
        # choosing /rtc) and logs each reconnect attempt: not the caller's business
        logging.getLogger("livekit").setLevel(logging.CRITICAL)
        room = self._room = rtc.Room()
        self._wire(room)
        token = join_token(self.settings, self.room_name, self.identity, timedelta(hours=1),
                           name="voicectl talk")["token"]
        started = time.time()
        try:
            await asyncio.wait_for(room.connect(self.settings.livekit_url, token,
                                                rtc.RoomOptions(auto_subscribe=True)), 15)
        except Exception as exc:  # noqa: BLE001 - ConnectError, timeouts, refused sockets
            raise CallError(f"cannot join room {self.room_name!r} at "
                            f"{self.settings.livekit_url}: {exc or type(exc).__name__}") from None
        self.connect_ms = (time.time() - started) * 1000
        self._source = rtc.AudioSource(MIC_RATE, 1, queue_size_ms=40)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", self._source)
        options = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        self._mic_sids.add((await room.local_participant.publish_track(track, options)).sid)
        self._spawn(self._keep_silent())

    async def summon(self, dispatch: bool = True) -> None:
        """Dispatch the agent (unless it is on its way) and wait until it listens."""
        from voicectl.livekit.api import dispatch_async

        since = time.time()
        self.agent_left.clear()
        if dispatch:
            await dispatch_async(self.settings, self.room_name, self.agent_name, self.metadata,
                                 create_room=False)
        if not await self._until(lambda: self._listening_agent() is not None,
                                 self.join_timeout):
            raise CallError(self._no_agent_reason(since))
        self.agent_join_ms = (time.time() - since) * 1000

    async def ask(self, pcm: np.ndarray) -> Exchange:
        """Say the recording, then wait for the spoken reply; CallError when none comes."""
        from livekit import rtc

        assert self._source is not None
        x = Exchange(speech_s=voiced_end(pcm, MIC_RATE), asked_at=time.time())
        step = int(MIC_RATE * FRAME_S)
        self._asking = True
        try:
            start = time.time()
            for i in range(0, len(pcm), step):
                delay = start + i / MIC_RATE - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                chunk = pcm[i:i + step]
                if len(chunk) < step:
                    chunk = np.pad(chunk, (0, step - len(chunk)))
                async with self._mic:
                    await self._source.capture_frame(
                        rtc.AudioFrame(chunk.tobytes(), MIC_RATE, 1, step))
        finally:
            self._asking = False
        x.speech_end_at = start + x.speech_s
        states_from = len(self._states)
        await self._until(lambda: self.agent_left.is_set() or self._answered(x, states_from),
                          self.reply_timeout)
        if self.agent_left.is_set():
            raise CallError(f"the agent left room {self.room_name!r} before it answered "
                            "(see voicectl logs agent)")
        await asyncio.sleep(0.3)  # the reply's tail and its transcript
        self._fill(x, states_from)
        if not x.heard:
            raise CallError(f"the agent sent no transcript of the speech within "
                            f"{self.reply_timeout:g} s (is its STT working? voicectl logs "
                            "agent)")
        if x.v2v_ms is None:
            raise CallError(f"the agent heard {x.heard!r} but no reply audio arrived within "
                            f"{self.reply_timeout:g} s (voicectl logs agent)")
        return x

    async def leave(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._room is not None:
            with contextlib.suppress(Exception):
                await self._room.disconnect()
            self._room = None

    # ------------------------------------------------------------------ what happens

    def _wire(self, room: rtc.Room) -> None:
        from livekit import rtc

        @room.on("track_subscribed")
        def on_track(track: rtc.Track, _pub: object, participant: rtc.RemoteParticipant) -> None:
            if self._is_our_agent(participant) and track.kind == rtc.TrackKind.KIND_AUDIO:
                self.agent = participant
                if self._recorder is not None:
                    self._recorder.cancel()
                self._recorder = self._spawn(self._record(track))  # type: ignore[arg-type]
                self._changed.set()

        @room.on("participant_disconnected")
        def on_left(participant: rtc.RemoteParticipant) -> None:
            if participant is self.agent or (self.agent is not None
                                             and participant.identity == self.agent.identity):
                self.agent = None
                self.agent_left.set()
                self._changed.set()

        @room.on("participant_attributes_changed")
        def on_attributes(changed: dict[str, str], participant: rtc.Participant) -> None:
            if self.agent is not None and participant.identity == self.agent.identity \
                    and ATTR_STATE in changed:
                self._states.append((time.time(), changed[ATTR_STATE]))
                self._changed.set()

        @room.on("local_track_published")
        def on_published(publication: rtc.LocalTrackPublication, _track: object) -> None:
            self._mic_sids.add(publication.sid)

        @room.on("local_track_subscribed")
        def on_subscribed(track: rtc.LocalTrack) -> None:
            self._heard_by_agent.add(track.sid)  # the server says someone receives our mic
            self._changed.set()

        def on_text(reader: rtc.TextStreamReader, _identity: str) -> None:
            self._spawn(self._read_text(reader))

        room.register_text_stream_handler(TRANSCRIPTION_TOPIC, on_text)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _until(self, condition: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not condition():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.2))
        return True

    def _is_our_agent(self, participant: rtc.RemoteParticipant) -> bool:
        from livekit import rtc

        if participant.kind != rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            return False
        return participant.attributes.get("lk.agent_name") in (None, "", self.agent_name)

    def _listening_agent(self) -> rtc.RemoteParticipant | None:
        """The agent, once it listens and receives our microphone (after a reconnect the
        state attribute comes back before the agent has subscribed to the new track)."""
        agent = self.agent
        if agent is None or self._recorder is None or self._room is None:
            return None
        if agent.attributes.get(ATTR_STATE) not in ("listening", None):
            return None
        mics = set(self._room.local_participant.track_publications)
        return agent if mics & self._heard_by_agent else None

    async def _read_text(self, reader: rtc.TextStreamReader) -> None:
        text = (await reader.read_all()).strip()
        attrs = reader.info.attributes or {}
        if attrs.get(ATTR_FINAL, "true") == "true" and text:
            track = attrs.get(ATTR_TRACK, "")
            if self._room is not None:  # after a reconnect the SDK may not say it republished
                self._mic_sids.update(self._room.local_participant.track_publications)
            self._texts.append((time.time(), track in self._mic_sids, text))
            self._changed.set()

    def _answered(self, x: Exchange, states_from: int) -> bool:
        """The agent spoke since the question and is listening again, its reply transcribed."""
        states = [st for _, st in self._states[states_from:]]
        if "speaking" not in states:
            return False
        after = states[len(states) - 1 - states[::-1].index("speaking"):]
        replies = [t for t in self._texts if t[0] >= x.asked_at and not t[1]]
        return bool(replies) and any(st in ("listening", "idle") for st in after)

    def _fill(self, x: Exchange, states_from: int) -> None:
        mine = [t for t in self._texts if t[0] >= x.asked_at and t[1]]
        theirs = [t for t in self._texts if t[0] >= x.asked_at and not t[1]]
        x.heard = " ".join(text for _, _, text in mine)
        x.reply = " ".join(text for _, _, text in theirs)
        if mine:
            x.heard_after_ms = (mine[0][0] - x.speech_end_at) * 1000
        x.states = [((t - x.asked_at) * 1000, st) for t, st in self._states[states_from:]]
        onset = first_sound(self._chunks, x.speech_end_at)
        if onset is not None:
            x.v2v_ms = max(0.0, onset - x.speech_end_at) * 1000
            reply = [s for t, s in self._chunks if t >= onset]
            pcm = np.concatenate(reply) if reply else np.zeros(0, dtype=np.int16)
            x.reply_pcm = pcm.tobytes()
            x.reply_audio_s = len(pcm) / RX_RATE

    def _no_agent_reason(self, since: float) -> str:
        from agent.events import find_since

        base = f"no agent {self.agent_name!r} joined room {self.room_name!r} within " \
               f"{self.join_timeout:g} s"
        if self.agent is not None and self._room is not None:
            state = self.agent.attributes.get(ATTR_STATE)
            if state not in ("listening", None):
                return f"the agent is in room {self.room_name!r} but {state}, not listening, " \
                       f"after {self.join_timeout:g} s"
            return f"the agent is in room {self.room_name!r} but has not subscribed to the " \
                   f"caller's microphone after {self.join_timeout:g} s (after a reconnect the " \
                   "SDK publishes it again; see voicectl logs livekit)"
        job = find_since(self.settings.events_path, since,
                         lambda r: r["event"] == "job" and r.get("room") == self.room_name)
        if job is not None and not job.get("accepted"):
            return f"{base}: the worker declined the job ({job.get('reason')})"
        if job is not None:
            return f"{base}: the worker accepted the job but its agent did not start " \
                   "listening (see voicectl logs agent)"
        others = [p.identity for p in self._room.remote_participants.values()] \
            if self._room else []
        extra = f"; in the room: {', '.join(others)}" if others else ""
        from voicectl.livekit.dispatch_why import explain

        why = explain(self.settings, self.room_name, self.agent_name, since)["why"]
        return f"{base}: no worker took the job: {why}{extra}"

    async def _keep_silent(self) -> None:
        """Silence whenever no question is being said: a microphone never stops."""
        from livekit import rtc

        assert self._source is not None
        step = int(MIC_RATE * FRAME_S)
        zero = np.zeros(step, dtype=np.int16).tobytes()
        start, n = time.time(), 0
        while True:
            if self._asking:
                await asyncio.sleep(FRAME_S)
                start, n = time.time(), 0  # the question's frames took these slots
                continue
            delay = start + n * FRAME_S - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            async with self._mic:
                if not self._asking:
                    await self._source.capture_frame(rtc.AudioFrame(zero, MIC_RATE, 1, step))
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


async def call_once(settings: Settings, room: str, pcm: np.ndarray, *, agent_name: str,
                    dispatch: bool = True, timeout: float = 30.0) -> CallResult:
    """Join, summon the agent, ask once, leave: what `voicectl talk` does."""
    caller = Caller(settings, room, agent_name=agent_name, join_timeout=timeout,
                    reply_timeout=timeout)
    voiced_end(pcm, MIC_RATE)  # a silent recording fails before anyone is called
    async with caller:
        await caller.summon(dispatch=dispatch)
        exchange = await caller.ask(pcm)
        agent = caller.agent.identity if caller.agent else ""
        return CallResult(caller.room_name, caller.identity, agent, caller.connect_ms,
                          caller.agent_join_ms, exchange)
