// The npm livekit-server-sdk against a LiveKit server; report what each call gave, as JSON.
//
// stdin: {"url": "http://127.0.0.1:7880", "api_key": "...", "api_secret": "...", "room": "r"}
// stdout: {"results": {step: {"ok": true, "value": ...} | {"ok": false, "code", "status",
//          "message"}}}
// Steps: createRoom, listRooms (names only), deleteRoom, deleteMissingRoom (the same room
// again), listRoomsWithoutGrant (a token with roomJoin only). The test (pytest) makes the
// assertions; this only calls and reports. The SDK reads a Twirp error's `code` only when the
// response's Content-Type is exactly application/json.
import { AccessToken, RoomServiceClient } from 'livekit-server-sdk';

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

async function outcome(fn) {
  try {
    return { ok: true, value: (await fn()) ?? null };
  } catch (err) {
    return { ok: false, code: err.code ?? null, status: err.status ?? null,
             message: err.message ?? String(err) };
  }
}

const spec = await readStdin();
const rooms = new RoomServiceClient(spec.url, spec.api_key, spec.api_secret);
const joinOnly = new AccessToken(spec.api_key, spec.api_secret, { identity: 'sdk-test' });
joinOnly.addGrant({ roomJoin: true, room: spec.room });
const noGrant = new RoomServiceClient(spec.url, undefined, undefined,
                                      { token: await joinOnly.toJwt() });

const results = {};
results.createRoom = await outcome(async () => {
  const room = await rooms.createRoom({ name: spec.room, emptyTimeout: 60 });
  return { name: room.name, sid: room.sid };
});
results.listRooms = await outcome(async () => (await rooms.listRooms([spec.room])).map((r) => r.name));
results.deleteRoom = await outcome(() => rooms.deleteRoom(spec.room));
results.deleteMissingRoom = await outcome(() => rooms.deleteRoom(spec.room));
results.listRoomsWithoutGrant = await outcome(() => noGrant.listRooms());
process.stdout.write(JSON.stringify({ results }) + '\n');
