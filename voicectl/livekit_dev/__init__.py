"""An embedded LiveKit dev server: the real wire protocol, with audio, for one machine.

The Go ``livekit-server`` is the production SFU; where it is not installed, ``voicectl up``
runs this instead so a developer can talk to the agent. It speaks what the official SDKs use
(the Python ``livekit`` rtc SDK, the browser's livekit-client, livekit-agents workers, the
server SDKs): ``/rtc`` signaling with WebRTC audio and data packets, Twirp ``RoomService`` /
``AgentDispatchService`` and the worker WebSocket ``/agent``, following livekit-server 1.13
where clients depend on it. It is not an SFU: audio only, no simulcast, no congestion control,
no TURN, one process.

Parts: ``config`` (settings and constants), ``auth`` (tokens and grants), ``rooms`` (rooms,
participants, empty-room timers), ``signaling`` (the ``/rtc`` WebSocket), ``peers`` (aiortc peer
connections), ``media`` (the audio relay), ``data`` (data packet routing), ``twirp`` (the HTTP
API), ``workers`` (the ``/agent`` protocol), ``dispatch`` (job offers), ``server`` (the app),
``main`` (the command line: ``python -m voicectl.livekit_dev``).
"""
