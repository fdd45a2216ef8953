// voicectl voice console: pick a Letta agent, join a room, dispatch the voice agent, and follow
// the conversation (connection state, agent presence, live transcript, per-turn latency).
// livekit-client is the vendored UMD bundle (global `LivekitClient`), served by this server.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const TOPIC_TRANSCRIPTION = 'lk.transcription';
  const ATTR_SEGMENT = 'lk.segment_id';
  const ATTR_FINAL = 'lk.transcription_final';
  const ATTR_AGENT_STATE = 'lk.agent.state';

  const state = {
    room: null,
    busy: false,
    agentIdentity: null,
    segments: new Map(), // segment id -> {el, textEl, who, text, final}
    userFinalAt: null, // performance.now() of the last final user segment awaiting a reply
    userFinalText: '',
    turns: [],
  };

  // ------------------------------------------------------------------ small helpers

  const now = () => new Date().toLocaleTimeString();

  function activity(text) {
    const li = document.createElement('li');
    li.textContent = `${now()} ${text}`;
    $('activity').append(li);
    li.scrollIntoView({block: 'nearest'});
  }

  function showError(context, message) {
    const box = $('errors');
    const p = document.createElement('p');
    const ctx = document.createElement('span');
    ctx.className = 'ctx';
    ctx.textContent = `${context}: `;
    p.append(ctx, document.createTextNode(message));
    box.append(p);
    while (box.children.length > 6) box.firstElementChild.remove();
    box.hidden = false;
    activity(`error: ${context}: ${message}`);
  }

  function clearErrors() {
    $('errors').replaceChildren();
    $('errors').hidden = true;
  }

  function setConnState(text) {
    const pill = $('conn-state');
    pill.textContent = text;
    pill.dataset.state = text;
  }

  function setAgentStatus(text, joined = false) {
    $('agent-status').textContent = text;
    $('agent-status').classList.toggle('joined', joined);
  }

  function setBusy(busy) {
    state.busy = busy;
    $('connect-btn').disabled = busy || state.room !== null;
    $('disconnect-btn').disabled = !busy && state.room === null;
  }

  function randomId(n = 6) {
    const bytes = crypto.getRandomValues(new Uint8Array(n));
    return Array.from(bytes, (b) => 'abcdefghijkmnpqrstuvwxyz23456789'[b % 32]).join('');
  }

  function errorText(err) {
    if (!err) return 'unknown error';
    const msg = err.message || String(err);
    if (err.reason === undefined || msg.includes(String(err.reason))) return msg;
    const names = (typeof LivekitClient !== 'undefined' && LivekitClient.ConnectionErrorReason) || {};
    return `${msg} (${names[err.reason] || `reason ${err.reason}`})`;
  }

  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: 'POST',
      headers: {'Content-Type': 'application/json'},
      body: JSON.stringify(body),
    };
    let resp;
    try {
      resp = await fetch(path, init);
    } catch (err) {
      throw new Error(`the console server did not answer (${errorText(err)})`);
    }
    let data = null;
    try {
      data = await resp.json();
    } catch (_) {
      // not JSON: reported below with the status
    }
    if (!resp.ok) throw new Error((data && data.error) || `HTTP ${resp.status}`);
    return data;
  }

  // ------------------------------------------------------------------ health and agents

  async function loadHealth() {
    try {
      const h = await api('/api/health');
      for (const name of ['livekit', 'letta']) {
        const badge = $(`health-${name}`);
        const ok = h[name] === 'ok';
        badge.classList.toggle('ok', ok);
        badge.classList.toggle('err', !ok);
        badge.textContent = `${name === 'livekit' ? 'LiveKit' : 'Letta'} ${ok ? 'ok' : 'down'}`;
        badge.title = h.details ? h.details[name] : '';
      }
    } catch (err) {
      showError('health', errorText(err));
    }
  }

  async function loadAgents() {
    const select = $('agent-select');
    select.setAttribute('aria-busy', 'true');
    const fallback = new Option("the voice agent's default (LETTA_AGENT_ID)", '');
    try {
      const data = await api('/api/agents');
      const options = data.agents.map((a) => {
        const opt = new Option(`${a.name} · ${a.id.slice(0, 14)}…`, a.id);
        opt.title = `${a.id}${a.model ? ` (${a.model})` : ''}`;
        return opt;
      });
      select.replaceChildren(...options, fallback);
      const preferred = data.default_agent_id || (data.agents[0] && data.agents[0].id) || '';
      select.value = preferred;
      if (select.value !== preferred) select.value = '';
      activity(`${data.agents.length} Letta agent(s) listed`);
    } catch (err) {
      select.replaceChildren(fallback);
      showError('Letta agents', errorText(err));
    } finally {
      select.setAttribute('aria-busy', 'false');
    }
  }

  // ------------------------------------------------------------------ transcript and latency

  function segment(id, who, identity) {
    let seg = state.segments.get(id);
    if (seg) return seg;
    $('transcript-empty').hidden = true;
    const el = document.createElement('div');
    el.className = `msg ${who} interim`;
    const whoEl = document.createElement('span');
    whoEl.className = 'who';
    whoEl.textContent = who === 'user' ? 'You' : `Agent (${identity})`;
    const textEl = document.createElement('span');
    textEl.className = 'text';
    el.append(whoEl, textEl);
    $('transcript').append(el);
    seg = {id, el, whoEl, textEl, who, text: '', final: false};
    state.segments.set(id, seg);
    if (who === 'agent') agentSegmentStarted(seg);
    return seg;
  }

  function setText(seg, text) {
    seg.text = text;
    seg.textEl.textContent = text;
    seg.el.scrollIntoView({block: 'nearest'});
  }

  function finalize(seg) {
    if (seg.final) return;
    seg.final = true;
    seg.el.classList.remove('interim');
    if (seg.who === 'user' && seg.text.trim()) {
      state.userFinalAt = performance.now();
      state.userFinalText = seg.text.trim();
    }
  }

  // The first agent segment after a final user transcript ends that turn's latency.
  function agentSegmentStarted(seg) {
    if (state.userFinalAt === null) return;
    const ms = Math.round(performance.now() - state.userFinalAt);
    state.userFinalAt = null;
    state.turns.push(ms);
    const lat = document.createElement('span');
    lat.className = 'lat';
    lat.textContent = `${ms} ms`;
    seg.whoEl.append(lat);
    const row = document.createElement('tr');
    for (const text of [String(state.turns.length), state.userFinalText, `${ms} ms`]) {
      const td = document.createElement('td');
      td.textContent = text;
      row.append(td);
    }
    $('latency-list').append(row);
    const avg = state.turns.reduce((a, b) => a + b, 0) / state.turns.length;
    $('latency-avg').textContent = `${Math.round(avg)} ms`;
  }

  // lk.transcription text streams: user segments arrive as whole texts (one stream per
  // update), agent segments as deltas on one stream; the final flag rides on the attributes.
  async function onTranscriptionStream(reader, participantInfo) {
    const room = state.room;
    if (!room) return;
    const attrs = reader.info.attributes || {};
    const id = attrs[ATTR_SEGMENT] || reader.info.id;
    const isUser = participantInfo.identity === room.localParticipant.identity;
    const seg = segment(id, isUser ? 'user' : 'agent', participantInfo.identity);
    try {
      if (isUser) {
        setText(seg, await reader.readAll());
      } else {
        const replace = seg.text !== '';
        let text = '';
        for await (const chunk of reader) {
          text += chunk;
          setText(seg, replace ? text : seg.text + chunk);
        }
      }
    } catch (err) {
      showError('transcript stream', errorText(err));
    }
    if (attrs[ATTR_FINAL] === 'true' || !isUser) finalize(seg);
  }

  // The older TranscriptionReceived event (agents that publish rtc.Transcription packets).
  function onTranscriptionReceived(segments, participant) {
    const room = state.room;
    if (!room) return;
    const isUser = participant && participant.identity === room.localParticipant.identity;
    for (const s of segments) {
      const seg = segment(s.id, isUser ? 'user' : 'agent', participant ? participant.identity : '?');
      setText(seg, s.text);
      if (s.final) finalize(seg);
    }
  }

  // ------------------------------------------------------------------ room

  function isAgent(p) {
    const {ParticipantKind} = LivekitClient;
    return p.isAgent || (ParticipantKind && p.kind === ParticipantKind.AGENT);
  }

  function agentJoined(p) {
    state.agentIdentity = p.identity;
    const agentState = p.attributes && p.attributes[ATTR_AGENT_STATE];
    setAgentStatus(`agent joined: ${p.identity}${agentState ? ` (${agentState})` : ''}`, true);
    activity(`agent joined: ${p.identity}`);
  }

  function wireRoom(room) {
    const {RoomEvent} = LivekitClient;
    room
      .on(RoomEvent.ConnectionStateChanged, (s) => {
        setConnState(s);
        activity(`connection: ${s}`);
      })
      .on(RoomEvent.Disconnected, (reason) => {
        if (state.room === room) teardown(`disconnected${reason !== undefined ? ` (${reason})` : ''}`);
      })
      .on(RoomEvent.ParticipantConnected, (p) => {
        if (isAgent(p)) agentJoined(p);
        else activity(`participant joined: ${p.identity}`);
      })
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (p.identity === state.agentIdentity) {
          state.agentIdentity = null;
          setAgentStatus('agent left');
          activity(`agent left: ${p.identity}`);
        }
      })
      .on(RoomEvent.ParticipantAttributesChanged, (changed, p) => {
        if (p.identity === state.agentIdentity && ATTR_AGENT_STATE in changed) {
          setAgentStatus(`agent joined: ${p.identity} (${changed[ATTR_AGENT_STATE]})`, true);
        }
      })
      .on(RoomEvent.TrackSubscribed, (track) => {
        if (track.kind === 'audio') $('audio-sink').append(track.attach());
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        track.detach().forEach((el) => el.remove());
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        $('audio-btn').hidden = room.canPlaybackAudio;
      })
      .on(RoomEvent.TranscriptionReceived, onTranscriptionReceived)
      .on(RoomEvent.MediaDevicesError, (err) => showError('microphone', errorText(err)));
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, onTranscriptionStream);
  }

  function teardown(reason) {
    const room = state.room;
    state.room = null;
    if (room) room.removeAllListeners();
    $('audio-sink').replaceChildren();
    $('audio-btn').hidden = true;
    state.agentIdentity = null;
    if (reason) activity(reason);
    setBusy(false);
  }

  async function connect(event) {
    event.preventDefault();
    if (state.busy || state.room) return;
    const roomName = $('room-input').value.trim();
    const lettaAgentId = $('agent-select').value || null;
    if (!$('room-input').checkValidity()) {
      showError('room', 'use 1-128 letters, digits and _ . : @ = + -, starting with a letter or digit');
      return;
    }
    clearErrors();
    setBusy(true);
    const identity = `web-${randomId()}`;
    let token;
    try {
      setConnState('requesting token');
      token = await api('/api/token', {room: roomName, identity});
      activity(`token minted for ${identity} in ${roomName}`);
    } catch (err) {
      setConnState('failed');
      showError('token', errorText(err));
      setBusy(false);
      return;
    }
    try {
      setConnState('dispatching');
      const d = await api('/api/dispatch-agent', {room: roomName, letta_agent_id: lettaAgentId});
      $('dispatch-info').textContent = `${d.dispatch_id} (${d.agent_name})`;
      setAgentStatus(`dispatched, waiting for ${d.agent_name} to join`);
      activity(`dispatched ${d.agent_name} (${d.dispatch_id}) with Letta agent ${lettaAgentId || 'default'}`);
      if (d.warning) showError('dispatch warning', d.warning);
    } catch (err) {
      setConnState('failed');
      showError('dispatch', errorText(err));
      setBusy(false);
      return;
    }

    const room = new LivekitClient.Room({adaptiveStream: true, dynacast: true});
    state.room = room;
    wireRoom(room);
    try {
      setConnState('connecting');
      await room.connect(token.url, token.token);
    } catch (err) {
      if (state.room === room) teardown();
      setConnState('failed');
      setAgentStatus('dispatched; this browser could not join the room');
      showError('media connection',
        `joining ${roomName} at ${token.url} failed: ${errorText(err)}. The agent was dispatched, ` +
        'but this browser could not reach the LiveKit room.');
      return;
    }
    setBusy(false);
    for (const p of room.remoteParticipants.values()) if (isAgent(p)) agentJoined(p);
    try {
      await room.localParticipant.setMicrophoneEnabled(true);
      activity('microphone on');
    } catch (err) {
      showError('microphone', errorText(err));
    }
    $('audio-btn').hidden = room.canPlaybackAudio;
  }

  async function disconnect() {
    const room = state.room;
    if (!room) return;
    await room.disconnect();
    if (state.room === room) teardown('disconnected by you');
    setConnState('disconnected');
    setAgentStatus('not dispatched');
  }

  // ------------------------------------------------------------------ start

  function start() {
    $('room-input').value = `voice-${randomId()}`;
    $('connect-form').addEventListener('submit', connect);
    $('disconnect-btn').addEventListener('click', () => disconnect().catch(
      (err) => showError('disconnect', errorText(err))));
    $('refresh-agents').addEventListener('click', loadAgents);
    $('audio-btn').addEventListener('click', () => state.room && state.room.startAudio().then(
      () => { $('audio-btn').hidden = true; }, (err) => showError('audio', errorText(err))));
    if (typeof LivekitClient === 'undefined') {
      showError('page', 'livekit-client did not load (/static/vendor/livekit-client.umd.js)');
      $('connect-btn').disabled = true;
    }
    loadHealth();
    loadAgents();
  }

  // A seam for the page's tests: feed transcript events without a media server.
  window.voiceConsole = Object.freeze({state, onTranscriptionStream, onTranscriptionReceived});

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
