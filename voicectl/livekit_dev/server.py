"""The dev server: its state (rooms, workers, dispatches) and what joins, publishing and
leaving do to it. HTTP and WebSocket handlers live in ``signaling``, ``twirp`` and ``workers``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiortc.mediastreams import MediaStreamTrack
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models as models_pb
from livekit.protocol import room as room_pb
from livekit.protocol import rtc as rtc_pb

from voicectl.livekit_dev.auth import Auth
from voicectl.livekit_dev.config import (
    PING_INTERVAL_S,
    PING_TIMEOUT_S,
    SERVER_VERSION,
    SIGNAL_PROTOCOL,
    DevConfig,
)
from voicectl.livekit_dev.data import DataRouter
from voicectl.livekit_dev.dispatch import Dispatcher
from voicectl.livekit_dev.ids import new_id
from voicectl.livekit_dev.media import AudioFanout, forward_opus
from voicectl.livekit_dev.participant import KINDS, Participant, TrackPub
from voicectl.livekit_dev.peers import PublisherPeer, SubscriberPeer
from voicectl.livekit_dev.rooms import Room, RoomRegistry
from voicectl.livekit_dev.signaling import SignalConnection, Signaling
from voicectl.livekit_dev.twirp import TwirpAPI
from voicectl.livekit_dev.workers import WorkerHub, WorkerSession

log = logging.getLogger("livekit-dev")

AUDIO_ONLY = "the voicectl LiveKit dev server carries audio only: video tracks are refused"


class DevServer:
    """State of one dev server process, and the aiohttp app that serves it."""

    def __init__(self, config: DevConfig) -> None:
        self.config = config
        forward_opus()  # relay Opus packets as received, as an SFU does
        self.node_id = new_id("ND_")
        self.started_at = time.time()
        self.rooms = RoomRegistry(config.empty_timeout, config.departure_timeout,
                                  on_expire=lambda room: self.spawn(self.close_room(room)))
        self.workers: dict[str, WorkerSession] = {}  # registered, in registration order
        self.dispatcher = Dispatcher(self)
        self.routers: dict[str, DataRouter] = {}
        self.closed_rooms: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.signaling = Signaling(self)
        self.twirp = TwirpAPI(self)
        self.worker_hub = WorkerHub(self)
        self.app = self._build_app()

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._access_log])
        app.router.add_get("/", self.handle_root)
        app.router.add_get("/_dev/state", self.handle_state)
        app.router.add_route("*", "/twirp/{service}/{method}", self.twirp.handle)
        app.router.add_get("/agent", self.worker_hub.handle)
        app.router.add_get("/rtc", self.signaling.handle)
        app.router.add_get("/rtc/validate", self.signaling.validate)
        app.router.add_route("OPTIONS", "/rtc/{tail:.*}", self.signaling.preflight)
        app.router.add_get("/rtc/v1", self.signaling.not_found_v1)
        app.router.add_get("/rtc/v1/{tail:.*}", self.signaling.not_found_v1)
        return app

    @web.middleware
    async def _access_log(
        self, request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        """One line per request, path only: a query string may carry a token."""
        start, status = time.perf_counter(), 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            if request.path != "/_dev/state":
                ms = (time.perf_counter() - start) * 1000
                log.info("%s %s -> %d (%.1f ms)", request.method, request.path, status, ms)

    async def handle_root(self, request: web.Request) -> web.Response:
        return web.Response(text="OK")

    async def handle_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    # ------------------------------------------------------------------ plumbing

    def spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def changed(self) -> None:
        """Write the state file, if one was asked for (atomic replace)."""
        path = self.config.state_file
        if path is None:
            return
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=2))
        os.replace(tmp, path)

    def snapshot(self) -> dict[str, Any]:
        """The dev-only state document of ``/_dev/state`` (the real server has none)."""
        return {
            "server": {"node_id": self.node_id, "version": SERVER_VERSION,
                       "kind": "voicectl-dev", "started_at": self.started_at},
            "rooms": [r.snapshot() for r in self.rooms.rooms.values()],
            "closed_rooms": list(self.closed_rooms[-50:]),
            "dispatches": [d.snapshot() for d in self.dispatcher.dispatches.values()],
            "workers": [w.snapshot() for w in self.workers.values()],
            "jobs": [j.snapshot() for j in self.dispatcher.jobs.values()],
        }

    async def close(self) -> None:
        """Tell participants the server is going away, close workers, stop tasks."""
        for room in list(self.rooms.rooms.values()):
            for p in room.active():
                await self.disconnect(p, models_pb.DisconnectReason.SERVER_SHUTDOWN,
                                      can_reconnect=True)
        await self.worker_hub.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # ------------------------------------------------------------------ rooms

    def ensure_room(self, name: str, req: room_pb.CreateRoomRequest | None = None) -> Room:
        """Get or create a room; a new room gets its room dispatches launched."""
        room = self.rooms.get(name)
        if room is not None:
            return room
        room = self.rooms.create(name, req)
        # pkg/rtc/room.go: without explicit agents a room dispatches to unnamed workers
        agents = list(req.agents) if req else []
        for agent in agents or [dispatch_pb.RoomAgentDispatch()]:
            self.dispatcher.add_dispatch(room, agent.agent_name, agent.metadata)
        self.changed()
        return room

    async def close_room(self, room: Room,
                         reason: int = models_pb.DisconnectReason.ROOM_CLOSED) -> None:
        """End the room's dispatches, remove who is left, forget it."""
        if self.rooms.get(room.name) is not room:
            return
        self.rooms.remove(room)
        for dispatch_id in list(room.dispatch_ids):
            await self.dispatcher.end_dispatch(room, dispatch_id)
        for p in room.active():
            await self.disconnect(p, reason)
        self.routers.pop(room.name, None)
        self.closed_rooms.append({"name": room.name, "sid": room.proto.sid,
                                  "closed_at": time.time(),
                                  "reason": models_pb.DisconnectReason.Name(reason)})
        log.info("room removed name=%s reason=%s", room.name,
                 models_pb.DisconnectReason.Name(reason))
        self.changed()

    async def broadcast_room_update(self, room: Room) -> None:
        msg = rtc_pb.SignalResponse(room_update=rtc_pb.RoomUpdate(room=room.current()))
        for p in room.active():
            if p.signal is not None:
                await p.signal.send(msg)

    async def broadcast(self, room: Room, subject: Participant,
                        include_self: bool = True) -> None:
        """ParticipantUpdate about ``subject`` to everyone (the subject too, as the real one)."""
        info = subject.info()
        msg = rtc_pb.SignalResponse(update=rtc_pb.ParticipantUpdate(participants=[info]))
        for p in list(room.participants.values()):
            if p.signal is None or (p is subject and not include_self):
                continue
            await p.signal.send(msg)
        self.changed()

    # ------------------------------------------------------------------ joining and leaving

    async def join(self, auth: Auth, conn: SignalConnection, *, auto_subscribe: bool,
                   client_protocol: int, sdk: str) -> Participant | None:
        """Add a participant, send its JoinResponse and first subscriber offer."""
        claims, video = auth.claims, auth.video
        assert video is not None
        room = self.ensure_room(video.room)
        identity = claims.identity or new_id("ID_")
        old = room.participants.get(identity)
        if old is not None and old.active:
            await self.disconnect(old, models_pb.DisconnectReason.DUPLICATE_IDENTITY)
        limit = room.proto.max_participants
        if limit and len(room.active()) >= limit:
            leave = rtc_pb.LeaveRequest(reason=models_pb.DisconnectReason.JOIN_FAILURE,
                                        action=rtc_pb.LeaveRequest.DISCONNECT)
            await conn.send(rtc_pb.SignalResponse(leave=leave))
            log.info("join refused: room %s is full (%d)", room.name, limit)
            return None
        p = Participant(
            sid=new_id("PA_"), identity=identity, room_name=room.name, name=claims.name or "",
            kind=KINDS.get((claims.kind or "").lower(), models_pb.ParticipantInfo.STANDARD),
            metadata=claims.metadata or "", attributes=dict(claims.attributes or {}),
            permission=models_pb.ParticipantPermission(
                can_subscribe=video.can_subscribe, can_publish=video.can_publish,
                can_publish_data=video.can_publish_data, hidden=bool(video.hidden),
                can_update_metadata=bool(video.can_update_own_metadata), agent=bool(video.agent),
            ),
            auto_subscribe=auto_subscribe, client_protocol=client_protocol, sdk=sdk,
            state=models_pb.ParticipantInfo.JOINED,
        )  # fmt: skip
        p.signal = conn
        label = f"{room.name}/{identity}"
        p.publisher = PublisherPeer(conn.send, f"{label} pub")
        p.subscriber = SubscriberPeer(conn.send, f"{label} sub")
        self._wire_publisher(room, p)
        self._wire_state(room, p)
        others = [o for o in room.active() if o is not p and not o.permission.hidden]
        self.rooms.joined(room, p)
        join = rtc_pb.JoinResponse(
            room=room.current(), participant=p.info(),
            other_participants=[o.info() for o in others],
            server_version=SERVER_VERSION, subscriber_primary=True,
            ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
            server_info=models_pb.ServerInfo(
                edition=models_pb.ServerInfo.Standard, version=SERVER_VERSION,
                protocol=SIGNAL_PROTOCOL, node_id=self.node_id,
                debug_info="voicectl LiveKit dev server"),
            client_configuration=models_pb.ClientConfiguration(),
        )  # fmt: skip
        await conn.send(rtc_pb.SignalResponse(join=join))
        log.info("participant joined room=%s identity=%s sid=%s kind=%s sdk=%s", room.name,
                 identity, p.sid, models_pb.ParticipantInfo.Kind.Name(p.kind), sdk or "?")
        if auto_subscribe and p.permission.can_subscribe:
            for o in others:
                for pub in o.tracks.values():
                    self._subscribe(p, pub)
        await p.subscriber.negotiate()
        if not p.permission.hidden:
            await self.broadcast(room, p, include_self=False)
        self.changed()
        return p

    def _wire_publisher(self, room: Room, p: Participant) -> None:
        pc = p.publisher.pc  # type: ignore[union-attr]

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind != "audio":
                log.warning("%s: %s (%s)", p.identity, AUDIO_ONLY, track.id)
                return
            self.spawn(self._media_arrived(room, p, track))

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            label = channel.label
            router = self.routers.setdefault(room.name, DataRouter())

            @channel.on("message")
            def on_message(message: bytes | str) -> None:
                if isinstance(message, str):
                    message = message.encode()
                router.route(message, label, p, room.participants.values())

    def _wire_state(self, room: Room, p: Participant) -> None:
        pc = p.subscriber.pc  # type: ignore[union-attr]

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected" and p.state == models_pb.ParticipantInfo.JOINED:
                p.state = models_pb.ParticipantInfo.ACTIVE
                await self.broadcast(room, p)
                waiting, p.unconfirmed = p.unconfirmed, set()
                await self.subscriber_answered(p, waiting)
            elif pc.connectionState == "failed" and p.active:
                log.warning("participant %s: subscriber connection failed", p.identity)

    async def disconnect(self, p: Participant, reason: int, *, notify: bool = True,
                         can_reconnect: bool = False) -> None:
        """Remove a participant: tell it why (unless it left), stop its media, tell the rest."""
        if not p.active:
            return
        room = self.rooms.get(p.room_name)
        p.state = models_pb.ParticipantInfo.DISCONNECTED
        conn, p.signal = p.signal, None
        if notify and conn is not None:
            action = rtc_pb.LeaveRequest.RECONNECT if can_reconnect else \
                rtc_pb.LeaveRequest.DISCONNECT
            await conn.send(rtc_pb.SignalResponse(leave=rtc_pb.LeaveRequest(
                can_reconnect=can_reconnect, reason=reason, action=action)))
        if conn is not None:
            await conn.close()
        for pub in list(p.tracks.values()) + list(p.pending.values()):
            if pub.fanout is not None:
                pub.fanout.close()
        for peer in (p.publisher, p.subscriber):
            if peer is not None:
                await peer.close()
        log.info("participant left room=%s identity=%s reason=%s", p.room_name, p.identity,
                 models_pb.DisconnectReason.Name(reason))
        if room is None:
            return
        for other in room.active():
            if other is not p:
                await self._unsubscribe_all_of(other, p)
        if not p.permission.hidden:
            await self.broadcast(room, p, include_self=False)
        self.rooms.left(room, p)
        self.changed()

    # ------------------------------------------------------------------ tracks

    async def add_track(self, p: Participant, req: rtc_pb.AddTrackRequest) -> None:
        """AddTrackRequest → TrackPublishedResponse; media joins it when it arrives."""
        refusal = None
        if req.type != models_pb.AUDIO:
            refusal = (rtc_pb.RequestResponse.UNSUPPORTED_TYPE, AUDIO_ONLY)
        elif not p.permission.can_publish:
            refusal = (rtc_pb.RequestResponse.NOT_ALLOWED, "no canPublish permission")
        if refusal is not None:
            log.warning("participant %s: track %r refused: %s", p.identity, req.name, refusal[1])
            await p.signal.send(rtc_pb.SignalResponse(  # type: ignore[union-attr]
                request_response=rtc_pb.RequestResponse(
                    reason=refusal[0], message=refusal[1], add_track=req)))
            return
        info = models_pb.TrackInfo(
            sid=new_id("TR_"), type=models_pb.AUDIO, name=req.name, muted=req.muted,
            source=req.source or models_pb.MICROPHONE, mime_type="audio/opus",
            disable_dtx=req.disable_dtx, stereo=req.stereo, disable_red=req.disable_red,
            stream=req.stream, audio_features=list(req.audio_features),
        )  # fmt: skip
        pub = TrackPub(info=info, cid=req.cid, owner=p)
        p.pending[req.cid] = pub
        log.info("track announced room=%s identity=%s track=%s cid=%s", p.room_name,
                 p.identity, info.sid, req.cid)
        await p.signal.send(rtc_pb.SignalResponse(  # type: ignore[union-attr]
            track_published=rtc_pb.TrackPublishedResponse(cid=req.cid, track=info)))
        orphan = p.orphans.pop(req.cid, None)
        if orphan is not None:
            await self._publish(self.rooms.get(p.room_name), p, pub, orphan)

    async def _media_arrived(self, room: Room, p: Participant, track: MediaStreamTrack) -> None:
        """The publisher's media for an announced track: the track is published now."""
        pub = p.pending.get(track.id) or next(
            (t for t in p.pending.values() if t.info.type == models_pb.AUDIO), None)
        if pub is None:  # the offer came before its AddTrackRequest
            log.info("media before its AddTrackRequest room=%s identity=%s cid=%s",
                     room.name, p.identity, track.id)
            p.orphans[track.id] = track
            return
        await self._publish(room, p, pub, track)

    async def _publish(self, room: Room | None, p: Participant, pub: TrackPub,
                       track: MediaStreamTrack) -> None:
        if room is None or not p.active:
            return
        p.pending.pop(pub.cid, None)
        pub.fanout = AudioFanout(track, pub.sid)
        p.tracks[pub.sid] = pub
        log.info("track published room=%s identity=%s track=%s", room.name, p.identity, pub.sid)

        @track.on("ended")
        def on_ended() -> None:
            self.spawn(self.unpublish(p, pub.sid))

        await self.broadcast(room, p)
        for other in room.active():
            if other is not p and other.auto_subscribe and other.permission.can_subscribe \
                    and pub.sid not in other.unsubscribed:
                self._subscribe(other, pub)
                await other.subscriber.negotiate()  # type: ignore[union-attr]

    async def unpublish(self, p: Participant, track_sid: str) -> None:
        pub = p.tracks.pop(track_sid, None)
        room = self.rooms.get(p.room_name)
        if pub is None or room is None or not p.active:
            return
        if pub.fanout is not None:
            pub.fanout.close()
        for other in room.active():
            if other is not p and other.subscriber is not None \
                    and other.subscriber.remove_track(track_sid):
                other.subscribed.discard(track_sid)
                await other.subscriber.negotiate()
        if p.signal is not None:
            await p.signal.send(rtc_pb.SignalResponse(
                track_unpublished=rtc_pb.TrackUnpublishedResponse(track_sid=track_sid)))
        log.info("track unpublished room=%s identity=%s track=%s", room.name, p.identity,
                 track_sid)
        await self.broadcast(room, p)

    async def publisher_renegotiated(self, p: Participant) -> None:
        """A publisher offer that stopped sending a track unpublishes it."""
        if p.publisher is None:
            return
        live = {t.receiver.track.id for t in p.publisher.pc.getTransceivers()
                if t.receiver.track is not None and t.currentDirection in ("recvonly", "sendrecv")}
        for sid, pub in list(p.tracks.items()):
            if pub.fanout is not None and pub.fanout.source.id not in live:
                await self.unpublish(p, sid)

    async def subscriber_answered(self, p: Participant, track_sids: set[str]) -> None:
        """Tell each publisher its track is subscribed (agents wait for it before speaking)."""
        room = self.rooms.get(p.room_name)
        if room is None or not track_sids:
            return
        if p.subscriber is not None and p.subscriber.pc.connectionState != "connected":
            p.unconfirmed |= track_sids  # sent once the connection is up
            return
        owners = {sid: o for o in room.active() for sid in o.tracks}
        for sid in track_sids:
            owner = owners.get(sid)
            if owner is not None and owner.signal is not None:
                await owner.signal.send(rtc_pb.SignalResponse(
                    track_subscribed=rtc_pb.TrackSubscribed(track_sid=sid)))

    def _subscribe(self, subscriber: Participant, pub: TrackPub) -> None:
        if pub.fanout is None or subscriber.subscriber is None or pub.sid in subscriber.subscribed:
            return
        subscriber.subscriber.add_track(pub.fanout.subscribe(), pub.owner.sid, pub.sid)
        subscriber.subscribed.add(pub.sid)

    async def _unsubscribe_all_of(self, subscriber: Participant, owner: Participant) -> None:
        changed = False
        for sid in list(owner.tracks):
            if subscriber.subscriber is not None and subscriber.subscriber.remove_track(sid):
                subscriber.subscribed.discard(sid)
                changed = True
        if changed and subscriber.subscriber is not None:
            await subscriber.subscriber.negotiate()

    async def mute_track(self, p: Participant, track_sid: str, muted: bool) -> None:
        pub = p.tracks.get(track_sid) or next(
            (t for t in p.pending.values() if t.sid == track_sid), None)
        room = self.rooms.get(p.room_name)
        if pub is None or room is None:
            return
        pub.info.muted = muted
        await self.broadcast(room, p)

    async def update_subscription(self, p: Participant, req: rtc_pb.UpdateSubscription) -> None:
        room = self.rooms.get(p.room_name)
        if room is None or p.subscriber is None:
            return
        sids = set(req.track_sids) | {s for pt in req.participant_tracks for s in pt.track_sids}
        pubs = {sid: pub for o in room.active() for sid, pub in o.tracks.items() if o is not p}
        changed = False
        for sid in sids:
            if req.subscribe:
                p.unsubscribed.discard(sid)
                if sid in pubs and sid not in p.subscribed and p.permission.can_subscribe:
                    self._subscribe(p, pubs[sid])
                    changed = True
            else:
                p.unsubscribed.add(sid)
                if p.subscriber.remove_track(sid):
                    p.subscribed.discard(sid)
                    changed = True
        if changed:
            await p.subscriber.negotiate()

    async def update_metadata(self, p: Participant, req: rtc_pb.UpdateParticipantMetadata) -> None:
        """Name, metadata, attributes (an empty value deletes); RequestResponse either way."""
        room = self.rooms.get(p.room_name)
        if not p.permission.can_update_metadata:
            reason, message = rtc_pb.RequestResponse.NOT_ALLOWED, "no canUpdateOwnMetadata"
        else:
            reason, message = rtc_pb.RequestResponse.OK, ""
            if req.name:
                p.name = req.name
            if req.metadata:
                p.metadata = req.metadata
            for key, value in req.attributes.items():
                if value:
                    p.attributes[key] = value
                else:
                    p.attributes.pop(key, None)
        if p.signal is not None:
            await p.signal.send(rtc_pb.SignalResponse(request_response=rtc_pb.RequestResponse(
                request_id=req.request_id, reason=reason, message=message,
                update_metadata=req)))
        if reason == rtc_pb.RequestResponse.OK and room is not None:
            await self.broadcast(room, p)
