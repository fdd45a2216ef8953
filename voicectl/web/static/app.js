// voicectl voice console: pick a Letta agent, join a room, dispatch the voice agent, and talk
// to it: the microphone is published on Connect, the agent's audio plays here, and the page
// follows the conversation (connection and agent state, live transcripts, audio levels and
// each turn's latency as measured in this page).
// livekit-client is the vendored UMD bundle (global `LivekitClient`), served by this server.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const TOPIC_TRANSCRIPTION = 'lk.transcription';
  const ATTR_SEGMENT = 'lk.segment_id';
  const ATTR_FINAL = 'lk.transcription_final';
  const ATTR_TRACK = 'lk.transcribed_track_id';
  const ATTR_AGENT_STATE = 'lk.agent.state';
  const AGENT_STATES = ['initializing', 'idle', 'listening', 'thinking', 'speaking'];

  // Audio levels are the RMS of the last analyser window, in dBFS (0 = full scale).
  const LEVEL = {
    FLOOR_DB: -60, // the meters' bottom
    VOICED_DB: -40, // your microphone above this is your voice; below it you have gone quiet
    AUDIBLE_DB: -40, // the agent's received audio above this is its reply, audible
    SAMPLE_MS: 20, // how often the levels are read
    WINDOW: 1024, // samples per analyser window (about 21 ms at 48 kHz)
  };

  const state = {
    room: null,
    busy: false,
    agentIdentity: null,
    agentState: null,
    segments: new Map(), // segment id -> {el, textEl, who, text, final}
    turns: [], // {n, said, finalAt, speechEndAt, onsetAt, v2vMs, textMs, ...}; see openTurn
    audio: null, // {ctx, timer, mic: meter|null, agent: meter|null}; see startMeters
    micVoicedAt: null, // performance.now() when your microphone was last above VOICED_DB
    agentAudible: false,
    agentPeakDb: -Infinity,
    agentAudibleMs: 0,
    micPeakDb: -Infinity,
    connectedAt: null, // performance.now() of the last Connect
    states: [], // [ms since Connect, agent state]
    trace: [], // the last TRACE_N level readings: [ms since Connect, mic dBFS, agent dBFS]
  };
  const TRACE_N = 1500; // 30 s of readings

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

  // ------------------------------------------------------------------ audio levels

  const toDb = (rms) => (rms > 0 ? 20 * Math.log10(rms) : -Infinity);
  const fmtDb = (db) => (Number.isFinite(db) ? `${db.toFixed(1)} dBFS` : '–');

  // One AudioContext per connection, made while the Connect click still counts as a gesture
  // (autoplay rules), so its meters run without an extra click.
  function audioContext() {
    if (state.audio) return state.audio.ctx;
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return null;
    const ctx = new Ctx();
    state.audio = {ctx, timer: null, mic: null, agent: null};
    ctx.resume().catch(() => {});
    return ctx;
  }

  // An AnalyserNode on a MediaStreamTrack (nothing is routed to the speakers from here: the
  // agent plays through its <audio> element, which Chromium also needs for remote tracks).
  function meter(mediaStreamTrack, which) {
    const ctx = audioContext();
    if (!ctx || !mediaStreamTrack) return null;
    const source = ctx.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
    const analyser = ctx.createAnalyser();
    analyser.fftSize = LEVEL.WINDOW;
    source.connect(analyser);
    const m = {which, source, analyser, buf: new Float32Array(analyser.fftSize), db: -Infinity,
      trackId: mediaStreamTrack.id};
    if (!state.audio.timer) state.audio.timer = setInterval(sampleLevels, LEVEL.SAMPLE_MS);
    return m;
  }

  function dropMeter(which) {
    const a = state.audio;
    if (!a || !a[which]) return;
    a[which].source.disconnect();
    a[which] = null;
    showLevel(which, -Infinity);
  }

  function readDb(m) {
    m.analyser.getFloatTimeDomainData(m.buf);
    let sum = 0;
    for (const v of m.buf) sum += v * v;
    m.db = toDb(Math.sqrt(sum / m.buf.length));
    return m.db;
  }

  function showLevel(which, db) {
    const bar = $(`${which}-level-bar`);
    if (!bar) return;
    const span = -LEVEL.FLOOR_DB;
    const pct = Number.isFinite(db) ? Math.max(0, Math.min(100, ((db + span) / span) * 100)) : 0;
    bar.style.width = `${pct.toFixed(0)}%`;
    const threshold = which === 'mic' ? LEVEL.VOICED_DB : LEVEL.AUDIBLE_DB;
    bar.classList.toggle('on', db > threshold);
  }

  let lastSample = 0;
  function sampleLevels() {
    const a = state.audio;
    if (!a) return;
    const t = performance.now();
    const dt = lastSample ? Math.min(t - lastSample, 200) : LEVEL.SAMPLE_MS;
    lastSample = t;
    if (a.mic) {
      const db = readDb(a.mic);
      showLevel('mic', db);
      if (db > state.micPeakDb) state.micPeakDb = db;
      if (db > LEVEL.VOICED_DB) state.micVoicedAt = t;
    }
    if (a.agent) {
      const db = readDb(a.agent);
      showLevel('agent', db);
      const audible = db > LEVEL.AUDIBLE_DB;
      if (audible) {
        state.agentAudibleMs += dt;
        if (db > state.agentPeakDb) state.agentPeakDb = db;
        if (!state.agentAudible) agentBecameAudible(t);
        const turn = state.turns[state.turns.length - 1];
        if (turn && turn.onsetAt !== null) {
          turn.replyAudibleMs += dt;
          turn.replyPeakDb = Math.max(turn.replyPeakDb, db);
        }
      }
      state.agentAudible = audible;
    }
    if (state.connectedAt !== null) {
      const r = (m) => (m && Number.isFinite(m.db) ? Math.round(m.db) : null);
      state.trace.push([Math.round(t - state.connectedAt), r(a.mic), r(a.agent)]);
      if (state.trace.length > TRACE_N) state.trace.splice(0, state.trace.length - TRACE_N);
    }
    $('agent-peak').textContent = `peak ${fmtDb(state.agentPeakDb)}`;
    $('mic-peak').textContent = `peak ${fmtDb(state.micPeakDb)}`;
  }

  function stopMeters() {
    const a = state.audio;
    state.audio = null;
    if (!a) return;
    clearInterval(a.timer);
    for (const which of ['mic', 'agent']) {
      if (a[which]) a[which].source.disconnect();
      showLevel(which, -Infinity);
    }
    a.ctx.close().catch(() => {});
    state.agentAudible = false;
    state.micVoicedAt = null;
    lastSample = 0;
  }

  // ------------------------------------------------------------------ turns and latency
  //
  // A turn opens when your final transcript arrives. It is answered when the agent's received
  // audio next becomes audible: voice to voice runs from the last moment your microphone was
  // above VOICED_DB (you had gone quiet) to that moment, both read here on one clock; and
  // "transcript → reply" from your final transcript's arrival to the agent's first words as
  // text (these need no audio meter).

  function pendingTurn() {
    const turn = state.turns[state.turns.length - 1];
    return turn && turn.onsetAt === null && !turn.closed ? turn : null;
  }

  function openTurn(text) {
    const t = performance.now();
    const open = pendingTurn();
    if (open && !open.agentSeg) {
      // you spoke again before the agent answered: the same turn, longer
      open.said = `${open.said} ${text}`;
      open.finalAt = t;
      open.cells.said.textContent = open.said;
      return open;
    }
    if (open) closeTurn(open, 'no audio'); // it answered in text only
    const turn = {
      n: state.turns.length + 1, said: text, finalAt: t, speechEndAt: null, onsetAt: null,
      v2vMs: null, textMs: null, agentSeg: null, replyPeakDb: -Infinity, replyAudibleMs: 0,
      closed: false, cells: {},
    };
    const row = document.createElement('tr');
    for (const key of ['n', 'said', 'v2v', 'text']) {
      const td = document.createElement('td');
      td.textContent = key === 'n' ? String(turn.n) : key === 'said' ? text : '…';
      turn.cells[key] = td;
      row.append(td);
    }
    $('latency-list').append(row);
    state.turns.push(turn);
    return turn;
  }

  function agentBecameAudible(t) {
    const turn = pendingTurn();
    if (!turn) return; // the agent spoke on its own (a greeting, a goodbye)
    turn.onsetAt = t;
    turn.speechEndAt = state.micVoicedAt;
    if (turn.speechEndAt === null || !state.audio || !state.audio.mic) {
      closeTurn(turn, 'no mic level');
      return;
    }
    turn.v2vMs = Math.round(t - turn.speechEndAt);
    turn.cells.v2v.textContent = `${turn.v2vMs} ms`;
    turn.cells.v2v.title = 'from your microphone going quiet to the agent\'s first audible audio';
    markReply(turn);
    closeTurn(turn);
    updateAverages();
  }

  function closeTurn(turn, why) {
    if (turn.closed) return;
    turn.closed = true;
    if (why && turn.v2vMs === null) turn.cells.v2v.textContent = why;
    if (turn.textMs === null) turn.cells.text.textContent = '–';
  }

  // The agent has stopped speaking; a reply that never became audible here (its audio lags
  // its state a little) is marked so.
  function replyEnded() {
    const turn = pendingTurn();
    if (!turn || !turn.agentSeg) return;
    setTimeout(() => { if (pendingTurn() === turn) closeTurn(turn, 'no audio'); }, 1500);
  }

  // The agent's first words as text for the open turn.
  function agentSegmentStarted(seg) {
    const turn = state.turns[state.turns.length - 1];
    if (!turn || turn.agentSeg || (turn.closed && turn.onsetAt === null)) return;
    turn.agentSeg = seg;
    turn.textMs = Math.round(performance.now() - turn.finalAt);
    turn.cells.text.textContent = `${turn.textMs} ms`;
    markReply(turn);
    updateAverages();
  }

  function markReply(turn) {
    const seg = turn.agentSeg;
    if (!seg || turn.v2vMs === null || seg.whoEl.querySelector('.lat')) return;
    const lat = document.createElement('span');
    lat.className = 'lat';
    lat.textContent = `${turn.v2vMs} ms voice to voice`;
    seg.whoEl.append(lat);
  }

  function updateAverages() {
    for (const [key, id] of [['v2vMs', 'latency-avg'], ['textMs', 'latency-avg-text']]) {
      const values = state.turns.map((t) => t[key]).filter((v) => v !== null);
      $(id).textContent = values.length
        ? `${Math.round(values.reduce((a, b) => a + b, 0) / values.length)} ms` : '–';
    }
  }

  // What the page measured, for a person debugging and for the page's tests.
  function report({trace = false} = {}) {
    const db = (v) => (Number.isFinite(v) ? Math.round(v * 10) / 10 : null);
    return {
      ...(trace ? {trace: state.trace} : {}),
      agent_state: state.agentState,
      meters: {mic: !!(state.audio && state.audio.mic), agent: !!(state.audio && state.audio.agent)},
      mic_peak_dbfs: db(state.micPeakDb),
      agent_peak_dbfs: db(state.agentPeakDb),
      agent_audible_ms: Math.round(state.agentAudibleMs),
      agent_states: state.states.map(([ms, s]) => ({after_ms: ms, state: s})),
      can_playback_audio: state.room ? state.room.canPlaybackAudio : null,
      audio_elements: [...$('audio-sink').children].map((el) => ({
        paused: el.paused, muted: el.muted, ready_state: el.readyState})),
      thresholds_dbfs: {voiced: LEVEL.VOICED_DB, audible: LEVEL.AUDIBLE_DB},
      turns: state.turns.map((t) => ({
        said: t.said, reply: t.agentSeg ? t.agentSeg.text : '', v2v_ms: t.v2vMs,
        transcript_to_text_ms: t.textMs, reply_peak_dbfs: db(t.replyPeakDb),
        // how long after your microphone went quiet your final transcript arrived here
        speech_end_to_transcript_ms: t.speechEndAt === null ? null
          : Math.round(t.finalAt - t.speechEndAt),
        onset_after_ms: t.onsetAt === null || state.connectedAt === null ? null
          : Math.round(t.onsetAt - state.connectedAt),
        reply_audible_ms: Math.round(t.replyAudibleMs),
      })),
    };
  }

  // ------------------------------------------------------------------ transcript

  function segment(id, who, identity) {
    let seg = state.segments.get(id);
    if (seg) return seg;
    $('transcript-empty').hidden = true;
    const el = document.createElement('div');
    el.className = `msg ${who} interim`;
    const whoEl = document.createElement('span');
    whoEl.className = 'who';
    whoEl.textContent = who === 'user' ? 'You' : 'Agent';
    whoEl.title = identity;
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
    if (seg.who === 'user' && seg.text.trim()) openTurn(seg.text.trim());
  }

  function localTrackSids(room) {
    const pubs = room.localParticipant.trackPublications;
    return pubs ? new Set([...pubs.values()].map((p) => p.trackSid)) : new Set();
  }

  // lk.transcription text streams. The agent sends both sides: a transcript of your speech
  // carries your microphone's track sid in lk.transcribed_track_id, its own speech its own
  // track's. Your segments arrive as whole texts (one stream per update, the final flag on the
  // header), the agent's as deltas on one stream per segment (the final flag on the trailer,
  // so it is read once the stream has ended).
  async function onTranscriptionStream(reader, participantInfo) {
    const room = state.room;
    if (!room) return;
    const attrs = reader.info.attributes || {};
    const id = attrs[ATTR_SEGMENT] || reader.info.id;
    const track = attrs[ATTR_TRACK];
    const isUser = track ? localTrackSids(room).has(track)
      : participantInfo.identity === room.localParticipant.identity;
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
    const final = (reader.info.attributes || attrs)[ATTR_FINAL];
    if (final === 'true' || (!isUser && final === undefined)) finalize(seg);
  }

  // ------------------------------------------------------------------ room

  function isAgent(p) {
    const {ParticipantKind} = LivekitClient;
    return p.isAgent || (ParticipantKind && p.kind === ParticipantKind.AGENT);
  }

  function setAgentState(value) {
    state.agentState = value || null;
    if (value && state.connectedAt !== null) {
      state.states.push([Math.round(performance.now() - state.connectedAt), value]);
    }
    const pill = $('agent-state');
    pill.textContent = value || '–';
    pill.dataset.state = AGENT_STATES.includes(value) ? value : 'none';
  }

  // No agent in the room after AGENT_JOIN_TIMEOUT_MS: ask the server why (no worker under
  // that name, the worker at full load, the worker declined, or nothing known).
  const AGENT_JOIN_TIMEOUT_MS = 15000;

  function watchAgentJoin(roomName, d) {
    const attempt = state.connectedAt; // this connect, not a later one
    const stale = () => state.agentIdentity || !state.room || state.connectedAt !== attempt;
    setTimeout(async () => {
      if (stale()) return;
      try {
        const q = `room=${encodeURIComponent(roomName)}&since=${encodeURIComponent(d.dispatched_at)}`;
        const why = await api(`/api/dispatch-why?${q}`);
        if (stale()) return;
        setAgentStatus(`${d.agent_name} did not join: ${why.cause}`);
        showError('agent did not join', `no agent joined ${roomName} within ` +
          `${AGENT_JOIN_TIMEOUT_MS / 1000} s: ${why.why}`);
        activity(`agent did not join (${why.cause}): ${why.why}`);
      } catch (err) {
        showError('agent did not join', `no agent joined ${roomName}; the cause is unknown ` +
          `(${errorText(err)})`);
      }
    }, AGENT_JOIN_TIMEOUT_MS);
  }

  function agentJoined(p) {
    state.agentIdentity = p.identity;
    setAgentStatus(`joined: ${p.identity}`, true);
    setAgentState(p.attributes && p.attributes[ATTR_AGENT_STATE]);
    activity(`agent joined: ${p.identity}`);
    for (const pub of p.audioTrackPublications.values()) {
      if (pub.track) agentTrack(pub.track);
    }
  }

  // The agent's audio: played by an <audio> element, measured by an analyser.
  function agentTrack(track) {
    if (track.attachedElements.length === 0) $('audio-sink').append(track.attach());
    const a = state.audio;
    if (a && a.agent && a.agent.trackId === track.mediaStreamTrack.id) return;
    dropMeter('agent');
    try {
      const m = meter(track.mediaStreamTrack, 'agent');
      if (m) state.audio.agent = m;
    } catch (err) {
      showError('audio meter', errorText(err));
    }
  }

  function micTrack() {
    const room = state.room;
    if (!room) return;
    const pub = room.localParticipant.getTrackPublication(LivekitClient.Track.Source.Microphone);
    if (!pub || !pub.track) return;
    dropMeter('mic');
    try {
      const m = meter(pub.track.mediaStreamTrack, 'mic');
      if (m) state.audio.mic = m;
    } catch (err) {
      showError('audio meter', errorText(err));
    }
  }

  function wireRoom(room) {
    const {RoomEvent} = LivekitClient;
    room
      .on(RoomEvent.ConnectionStateChanged, (s) => {
        setConnState(s);
        activity(`connection: ${s}`);
      })
      .on(RoomEvent.Disconnected, (reason) => {
        const names = LivekitClient.DisconnectReason || {};
        const why = reason === undefined ? '' : ` (${names[reason] || reason})`;
        if (state.room === room) teardown(`disconnected${why}`);
      })
      .on(RoomEvent.ParticipantConnected, (p) => {
        if (isAgent(p)) agentJoined(p);
        else activity(`participant joined: ${p.identity}`);
      })
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (p.identity === state.agentIdentity) {
          state.agentIdentity = null;
          setAgentStatus('agent left');
          setAgentState(null);
          dropMeter('agent');
          activity(`agent left: ${p.identity}`);
        }
      })
      .on(RoomEvent.ParticipantAttributesChanged, (changed, p) => {
        if (p.identity === state.agentIdentity && ATTR_AGENT_STATE in changed) {
          const before = state.agentState;
          setAgentState(changed[ATTR_AGENT_STATE]);
          activity(`agent ${changed[ATTR_AGENT_STATE]}`);
          if (before === 'speaking') replyEnded();
        }
      })
      .on(RoomEvent.TrackSubscribed, (track, _pub, p) => {
        if (track.kind !== 'audio') return;
        if (isAgent(p) && p.identity !== state.agentIdentity) agentJoined(p);
        if (p.identity === state.agentIdentity) agentTrack(track);
        else $('audio-sink').append(track.attach());
      })
      .on(RoomEvent.TrackUnsubscribed, (track, _pub, p) => {
        track.detach().forEach((el) => el.remove());
        if (p.identity === state.agentIdentity) dropMeter('agent');
      })
      .on(RoomEvent.LocalTrackPublished, (pub) => {
        if (pub.source === LivekitClient.Track.Source.Microphone) micTrack();
      })
      .on(RoomEvent.LocalTrackUnpublished, (pub) => {
        if (pub.source === LivekitClient.Track.Source.Microphone) dropMeter('mic');
      })
      .on(RoomEvent.AudioPlaybackStatusChanged, () => {
        $('audio-btn').hidden = room.canPlaybackAudio;
      })
      .on(RoomEvent.MediaDevicesError, (err) => showError('microphone', errorText(err)));
    room.registerTextStreamHandler(TOPIC_TRANSCRIPTION, onTranscriptionStream);
  }

  function teardown(reason) {
    const room = state.room;
    state.room = null;
    if (room) room.removeAllListeners();
    stopMeters();
    for (const turn of state.turns) closeTurn(turn, 'not heard');
    $('audio-sink').replaceChildren();
    $('audio-btn').hidden = true;
    $('mic-status').textContent = 'off';
    state.agentIdentity = null;
    setAgentState(null);
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
    audioContext(); // while the click is fresh
    state.connectedAt = performance.now();
    state.states = [];
    state.trace = [];
    const identity = `web-${randomId()}`;
    let token;
    try {
      setConnState('requesting token');
      token = await api('/api/token', {room: roomName, identity});
      activity(`token minted for ${identity} in ${roomName}`);
    } catch (err) {
      setConnState('failed');
      showError('token', errorText(err));
      stopMeters();
      setBusy(false);
      return;
    }
    try {
      setConnState('dispatching');
      const d = await api('/api/dispatch-agent', {room: roomName, letta_agent_id: lettaAgentId});
      $('dispatch-info').textContent = `${d.dispatch_id} (${d.agent_name})`;
      setAgentStatus(`dispatched, waiting for ${d.agent_name} to join`);
      watchAgentJoin(roomName, d);
      activity(`dispatched ${d.agent_name} (${d.dispatch_id}) with Letta agent ${lettaAgentId || 'default'}`);
      if (d.warning) showError('dispatch warning', d.warning);
    } catch (err) {
      setConnState('failed');
      showError('dispatch', errorText(err));
      stopMeters();
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
      if (state.room !== room) return;
      micTrack();
      const pub = room.localParticipant.getTrackPublication(LivekitClient.Track.Source.Microphone);
      const label = pub && pub.track ? pub.track.mediaStreamTrack.label : '';
      $('mic-status').textContent = `on${label ? ` (${label})` : ''}`;
      activity(`microphone on${label ? `: ${label}` : ''}`);
    } catch (err) {
      $('mic-status').textContent = 'unavailable';
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
    $('audio-btn').addEventListener('click', () => {
      if (state.audio) state.audio.ctx.resume().catch(() => {});
      if (state.room) {
        state.room.startAudio().then(() => { $('audio-btn').hidden = true; },
          (err) => showError('audio', errorText(err)));
      }
    });
    if (typeof LivekitClient === 'undefined') {
      showError('page', 'livekit-client did not load (/static/vendor/livekit-client.umd.js)');
      $('connect-btn').disabled = true;
    }
    loadHealth();
    loadAgents();
  }

  // A seam for the page's tests: feed transcript events without a media server, and read
  // what the page measured.
  window.voiceConsole = Object.freeze({state, onTranscriptionStream, report});

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
