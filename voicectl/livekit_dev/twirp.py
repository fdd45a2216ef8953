"""The Twirp HTTP API: ``RoomService`` and ``AgentDispatchService``, protobuf or JSON bodies.

Errors are JSON ``{"code", "msg"}`` with ``Content-Type`` exactly ``application/json``: the JS
server SDK reads the error code only then. A token the auth middleware rejects is HTTP 401
with a plain-text body; a missing token or grant is ``unauthenticated`` (the real server never
answers ``permission_denied`` here).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.protocol import agent_dispatch as dispatch_pb
from livekit.protocol import models as models_pb
from livekit.protocol import room as room_pb

from voicectl.livekit_dev.auth import PERMISSION_DENIED, Auth, AuthError, authenticate

if TYPE_CHECKING:
    from voicectl.livekit_dev.config import DevConfig
    from voicectl.livekit_dev.dispatch import Dispatcher
    from voicectl.livekit_dev.participant import Participant
    from voicectl.livekit_dev.rooms import Room, RoomRegistry

log = logging.getLogger("livekit-dev.twirp")


class TwirpHost(Protocol):
    """What the server API asks of the server (server.DevServer): a protocol, so that the
    server may import this module without this one importing it back."""

    config: DevConfig
    rooms: RoomRegistry
    dispatcher: Dispatcher

    def changed(self) -> None: ...

    def ensure_room(self, name: str, req: room_pb.CreateRoomRequest | None = None) -> Room: ...

    async def close_room(self, room: Room,
                         reason: int = models_pb.DisconnectReason.ROOM_CLOSED) -> None: ...

    async def broadcast_room_update(self, room: Room) -> None: ...

    async def disconnect(self, p: Participant, reason: int, *, notify: bool = True,
                         can_reconnect: bool = False) -> None: ...

TWIRP_STATUS = {
    "canceled": 408, "unknown": 500, "invalid_argument": 400, "malformed": 400,
    "deadline_exceeded": 408, "not_found": 404, "bad_route": 404, "already_exists": 409,
    "permission_denied": 403, "unauthenticated": 401, "resource_exhausted": 429,
    "failed_precondition": 412, "aborted": 409, "out_of_range": 400, "unimplemented": 501,
    "internal": 500, "unavailable": 503, "dataloss": 500,
}  # fmt: skip
SERVICES = {
    "livekit.RoomService": room_pb.DESCRIPTOR.services_by_name["RoomService"],
    "livekit.AgentDispatchService": dispatch_pb.DESCRIPTOR.services_by_name["AgentDispatchService"],
}
ROOM_NOT_FOUND = "requested room does not exist"

Handler = Callable[[Auth | None, Any], Awaitable[Message]]


class TwirpError(Exception):
    """A Twirp error: JSON ``{"code", "msg"}`` with the HTTP status of its code."""

    def __init__(self, code: str, msg: str) -> None:
        super().__init__(f"{code}: {msg}")
        self.code, self.msg = code, msg

    def response(self) -> web.Response:
        body = json.dumps({"code": self.code, "msg": self.msg}).encode()
        # set by hand: aiohttp's json_response appends "; charset=utf-8"
        return web.Response(body=body, status=TWIRP_STATUS[self.code],
                            headers={"Content-Type": "application/json"})


def _video(auth: Auth | None):  # noqa: ANN202
    return auth.video if auth else None


def require_create(auth: Auth | None) -> None:
    video = _video(auth)
    if not (video and video.room_create):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def require_list(auth: Auth | None) -> None:
    video = _video(auth)
    if not (video and video.room_list):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def require_admin(auth: Auth | None, room: str) -> None:
    video = _video(auth)
    if not (video and video.room_admin and video.room == room):
        raise TwirpError("unauthenticated", PERMISSION_DENIED)


def _require_room_name(name: str) -> None:
    if not name:
        raise TwirpError("invalid_argument", "room name is required")


def _decode(body: bytes, content_type: str, cls: type[Message]) -> Message:
    try:
        if content_type == "application/json":
            return json_format.Parse(body.decode() or "{}", cls(), ignore_unknown_fields=True)
        return cls.FromString(body)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise TwirpError("malformed", f"failed to parse request body: {exc}") from None


def _encode(msg: Message, content_type: str) -> web.Response:
    if content_type == "application/json":
        text = json_format.MessageToJson(
            msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        # exactly application/json, as Go's twirp writes it (aiohttp would add a charset)
        return web.Response(body=text.encode(), headers={"Content-Type": "application/json"})
    return web.Response(body=msg.SerializeToString(), content_type="application/protobuf")


class TwirpAPI:
    """The HTTP handlers of both services, over the server's rooms and dispatches."""

    def __init__(self, server: TwirpHost) -> None:
        self.server = server
        rs, ds = "livekit.RoomService", "livekit.AgentDispatchService"
        self.handlers: dict[tuple[str, str], tuple[type[Message], Handler]] = {
            (rs, "CreateRoom"): (room_pb.CreateRoomRequest, self.create_room),
            (rs, "ListRooms"): (room_pb.ListRoomsRequest, self.list_rooms),
            (rs, "DeleteRoom"): (room_pb.DeleteRoomRequest, self.delete_room),
            (rs, "ListParticipants"): (room_pb.ListParticipantsRequest, self.list_participants),
            (rs, "GetParticipant"): (room_pb.RoomParticipantIdentity, self.get_participant),
            (rs, "RemoveParticipant"): (room_pb.RoomParticipantIdentity, self.remove_participant),
            (rs, "UpdateRoomMetadata"): (room_pb.UpdateRoomMetadataRequest, self.update_metadata),
            (ds, "CreateDispatch"): (dispatch_pb.CreateAgentDispatchRequest, self.create_dispatch),
            (ds, "ListDispatch"): (dispatch_pb.ListAgentDispatchRequest, self.list_dispatch),
            (ds, "DeleteDispatch"): (dispatch_pb.DeleteAgentDispatchRequest, self.delete_dispatch),
        }

    async def handle(self, request: web.Request) -> web.Response:
        try:
            auth = authenticate(self.server.config.keys, request)
        except AuthError as exc:
            log.info("unauthorized: %s", exc)
            return web.Response(status=401, text=str(exc))
        try:
            return await self._call(request, auth)
        except TwirpError as exc:
            log.info("twirp error %s: %s", exc.code, exc.msg)
            return exc.response()

    async def _call(self, request: web.Request, auth: Auth | None) -> web.Response:
        service, method = request.match_info["service"], request.match_info["method"]
        if request.method != "POST":
            raise TwirpError("bad_route", f"unsupported method {request.method} (only POST)")
        descriptor = SERVICES.get(service)
        if descriptor is None or method not in descriptor.methods_by_name:
            raise TwirpError("bad_route", f"no handler for path {request.path!r}")
        content_type = request.content_type
        if content_type not in ("application/protobuf", "application/json"):
            raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")
        entry = self.handlers.get((service, method))
        if entry is None:
            raise TwirpError("unimplemented", f"{service}.{method} is not implemented by the "
                             "voicectl dev server")
        request_cls, handler = entry
        payload = _decode(await request.read(), content_type, request_cls)
        delay = self.server.config.twirp_delays.get(method)
        if delay:  # dev-only fault injection: a slow server (tests of callers' deadlines)
            await asyncio.sleep(delay)
        return _encode(await handler(auth, payload), content_type)

    def _room(self, name: str):  # noqa: ANN202
        room = self.server.rooms.get(name)
        if room is None:
            raise TwirpError("not_found", ROOM_NOT_FOUND)
        return room

    def _participant(self, req: room_pb.RoomParticipantIdentity):  # noqa: ANN202
        participant = self._room(req.room).participants.get(req.identity)
        if participant is None or not participant.active:
            raise TwirpError("not_found", "participant does not exist")
        return participant

    async def _dispatch_room(self, name: str):  # noqa: ANN202
        """Dispatch calls reach the room's node over psrpc: a missing room is no answer."""
        room = self.server.rooms.get(name)
        if room is None:
            await asyncio.sleep(self.server.config.missing_room_delay)
            raise TwirpError("unavailable", "no response from servers")
        return room

    # ------------------------------------------------------------------ RoomService

    async def create_room(self, auth: Auth | None, req: room_pb.CreateRoomRequest) -> Message:
        require_create(auth)
        _require_room_name(req.name)
        return self.server.ensure_room(req.name, req).current()

    async def list_rooms(self, auth: Auth | None, req: room_pb.ListRoomsRequest) -> Message:
        require_list(auth)
        names = set(req.names)
        rooms = [r.current() for r in self.server.rooms.rooms.values()
                 if not names or r.name in names]
        return room_pb.ListRoomsResponse(rooms=rooms)

    async def delete_room(self, auth: Auth | None, req: room_pb.DeleteRoomRequest) -> Message:
        require_create(auth)
        room = self._room(req.room)
        await self.server.close_room(room, models_pb.DisconnectReason.ROOM_DELETED)
        return room_pb.DeleteRoomResponse()

    async def list_participants(
        self, auth: Auth | None, req: room_pb.ListParticipantsRequest
    ) -> Message:
        require_admin(auth, req.room)
        # the room store answers an empty list for a room it does not know: no not_found
        room = self.server.rooms.get(req.room)
        active = room.active() if room is not None else []
        return room_pb.ListParticipantsResponse(participants=[p.info() for p in active])

    async def get_participant(
        self, auth: Auth | None, req: room_pb.RoomParticipantIdentity
    ) -> Message:
        require_admin(auth, req.room)
        return self._participant(req).info()

    async def remove_participant(
        self, auth: Auth | None, req: room_pb.RoomParticipantIdentity
    ) -> Message:
        require_admin(auth, req.room)
        participant = self._participant(req)
        await self.server.disconnect(participant, models_pb.DisconnectReason.PARTICIPANT_REMOVED)
        return room_pb.RemoveParticipantResponse()

    async def update_metadata(
        self, auth: Auth | None, req: room_pb.UpdateRoomMetadataRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = self._room(req.room)
        room.proto.metadata = req.metadata
        await self.server.broadcast_room_update(room)
        self.server.changed()
        return room.current()

    # ------------------------------------------------------------------ AgentDispatchService

    async def create_dispatch(
        self, auth: Auth | None, req: dispatch_pb.CreateAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        _require_room_name(req.room)
        room = self.server.ensure_room(req.room)
        dispatch = self.server.dispatcher.add_dispatch(room, req.agent_name, req.metadata)
        result = dispatch_pb.AgentDispatch()
        result.CopyFrom(dispatch.proto)
        return result

    async def list_dispatch(
        self, auth: Auth | None, req: dispatch_pb.ListAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = await self._dispatch_room(req.room)
        dispatches = self.server.dispatcher.dispatches
        found = [dispatches[i].proto for i in room.dispatch_ids
                 if not req.dispatch_id or i == req.dispatch_id]
        return dispatch_pb.ListAgentDispatchResponse(agent_dispatches=found)

    async def delete_dispatch(
        self, auth: Auth | None, req: dispatch_pb.DeleteAgentDispatchRequest
    ) -> Message:
        require_admin(auth, req.room)
        room = await self._dispatch_room(req.room)
        if req.dispatch_id not in room.dispatch_ids:
            raise TwirpError("not_found", "dispatch ID not found")
        dispatch = await self.server.dispatcher.end_dispatch(room, req.dispatch_id)
        self.server.changed()
        return dispatch.proto
