// Listen-in (supervisors and admins): one call's live audio, both sides mixed, from GET /api/calls/{id}/listen (a WebSocket
// of PCM16 8 kHz mono) played with Web Audio. The page only receives: it never asks for the microphone, and it sends
// nothing on the socket (the server closes a listen-in that does).
//
// Playback: each piece becomes an 8 kHz AudioBuffer scheduled right after the previous one, LEAD_S ahead of now;
// when the queue runs further than MAX_AHEAD_S ahead (the worker sent a burst), pieces are dropped until it is back,
// so the listener never drifts behind the call.
//
// For diagnostics (and the tests), window.callbridgeListen tells what arrived: the frames and the last samples.

import { request } from "./api.js";
import { $, h, show, utc } from "./dom.js";

const SAMPLE_RATE = 8000;
const LEAD_S = 0.12;
const MAX_AHEAD_S = 0.6;
const ENDED_GRACE_MS = 4000; // the server checks the call's state every 2 s
const KEEP_SAMPLES = 2 * SAMPLE_RATE; // the last two seconds, for callbridgeListen.samples()

let allowed = false;
let socket = null;
let context = null;
let playAt = 0;
let callId = null;
const ring = new Float32Array(KEEP_SAMPLES);
let ringAt = 0;
// Where the listener is (its stats' state, which the page's tests read too).
const STATE = Object.freeze({ IDLE: "idle", CONNECTING: "connecting", LISTENING: "listening", ENDED: "ended" });
const stats = { call: null, state: STATE.IDLE, frames: 0, dropped: 0, sides: null, closed: null };

window.callbridgeListen = {
  get stats() {
    return { ...stats, context: context ? context.state : null };
  },
  // the last `n` samples received, oldest first, as numbers in [-1, 1)
  samples(n = KEEP_SAMPLES) {
    const count = Math.min(n, KEEP_SAMPLES, stats.frames * 160);
    const out = new Array(count);
    for (let i = 0; i < count; i++) out[i] = ring[(ringAt - count + i + KEEP_SAMPLES) % KEEP_SAMPLES];
    return out;
  },
};

// Only a supervisor or an admin gets the button (the server refuses everyone else anyway).
export function allow(can) {
  allowed = can;
  if (!can) stop();
  show($("listen"), allowed && callId !== null);
}

// The detail panel shows a call (null: none); a call that has ended cannot be listened to.
export function showCall(id, live) {
  if (id !== callId) stop();
  callId = id;
  show($("listen"), allowed && id !== null);
  $("listen").disabled = !live;
  if (!live && socket) {
    // The table saw the end first: the server says so on the socket too and closes it; stop here if it does not.
    stats.state = STATE.ENDED;
    const s = socket;
    setTimeout(() => {
      if (socket === s) stop("the call ended");
    }, ENDED_GRACE_MS);
  }
}

export function listening() {
  return socket !== null;
}

// Listens to call `id` (a live row's Listen: the detail shows it already); nothing if it is heard already.
export function listenTo(id) {
  if (socket && callId === id) return;
  callId = id;
  start(id);
}

export function toggle() {
  if (socket) stop();
  else if (callId) start(callId);
}

function status(text) {
  $("listen-state").textContent = text;
}

function start(id) {
  stop();
  stats.call = id;
  stats.state = STATE.CONNECTING;
  stats.frames = 0;
  stats.dropped = 0;
  stats.sides = null;
  stats.closed = null;
  // created inside the click: the gesture lets it play
  context = new AudioContext();
  playAt = 0;
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/api/calls/${encodeURIComponent(id)}/listen`);
  socket.binaryType = "arraybuffer";
  $("listen").textContent = "Stop listening";
  status("connecting…");
  socket.onmessage = (e) => (typeof e.data === "string" ? control(JSON.parse(e.data)) : play(e.data));
  socket.onclose = (e) => {
    if (e.target !== socket) return;
    stats.closed = { code: e.code, reason: e.reason };
    const why = e.reason || (e.code === 1006 ? "refused or lost" : `closed (${e.code})`);
    stop(stats.state === STATE.ENDED ? "the call ended" : `stopped: ${why}`);
    refreshAudit();
  };
}

export function stop(message) {
  if (socket) {
    const s = socket;
    socket = null;
    s.onmessage = null;
    if (s.readyState === WebSocket.OPEN || s.readyState === WebSocket.CONNECTING) s.close(1000, "listener left");
    setTimeout(refreshAudit, 300);
  }
  if (context) {
    context.close();
    context = null;
  }
  if (stats.state !== STATE.ENDED) stats.state = STATE.IDLE;
  $("listen").textContent = "Listen";
  status(message || "");
}

function control(msg) {
  if (msg.type === "listening") {
    stats.state = STATE.LISTENING;
    status("listening…");
    refreshAudit();
  } else if (msg.type === "sides") {
    stats.sides = msg;
    const heard = [msg.caller && "caller", msg.agent && "agent"].filter(Boolean).join(" + ") || "silence";
    const note = msg.caller_offloaded && !msg.caller ? " (the caller's side is sent from the media thread here)" : "";
    status(`listening: ${heard}${note}`);
  } else if (msg.type === "ended") {
    stats.state = STATE.ENDED;
  }
}

function play(buffer) {
  const pcm = new Int16Array(buffer);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) {
    samples[i] = pcm[i] / 32768;
    ring[ringAt] = samples[i];
    ringAt = (ringAt + 1) % KEEP_SAMPLES;
  }
  stats.frames += pcm.length / 160;
  if (!context || !samples.length) return;
  const now = context.currentTime;
  if (playAt < now + 0.02) playAt = now + LEAD_S;
  if (playAt > now + MAX_AHEAD_S) {
    stats.dropped += pcm.length / 160;
    return;
  }
  const audio = context.createBuffer(1, samples.length, SAMPLE_RATE);
  audio.copyToChannel(samples, 0);
  const node = context.createBufferSource();
  node.buffer = audio;
  node.connect(context.destination);
  node.start(playAt);
  playAt += audio.duration;
}

// The listen-in audit (everyone signed in may read who listened).
export async function refreshAudit() {
  const r = await request("GET", "/api/listen/audit");
  if (!r.ok) return;
  $("listen-audit").tBodies[0].replaceChildren(...r.data.audit.map(auditRow));
}

export function clearAudit() {
  $("listen-audit").tBodies[0].replaceChildren();
}

function auditRow(a) {
  const what = a.action === "stop" ? `stopped after ${a.seconds} s: ${a.reason}` : "started";
  return h("tr", { "data-audit-id": a.id, "data-action": a.action, "data-call-id": a.call_id },
    h("td", { class: "when" }, utc(a.at_unix)), h("td", { class: "who" }, a.who), h("td", { class: "call" }, a.call_id),
    h("td", {}, a.caller || ""), h("td", { class: "what" }, what));
}
