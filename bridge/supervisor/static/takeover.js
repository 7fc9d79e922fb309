// Take-over (supervisors and admins): the supervisor talks to the caller from this browser's microphone; the model is
// muted until "Hand back". Started from the actions' confirmation (actions.js), inside the click that confirmed it:
//
//   1. getUserMedia asks for the microphone (the browser asks the person once);
//   2. POST /api/calls/{id}/takeover: the worker mutes the model and puts the supervisor's voice in its place;
//   3. GET /api/calls/{id}/takeover/audio?rate=16000 (a WebSocket): the microphone as PCM16 16 kHz mono, one binary
//      message per 64 ms (an AudioContext at 16 kHz resamples the microphone; an AudioWorklet, mic-worklet.js,
//      hands its samples over);
//   4. listen-in (listen.js) is started too, so the supervisor hears the caller.
//
// "Hand back" posts /handback and stops the microphone and the socket. If the socket closes on its own (the call
// ended, or the worker handed the call back), the microphone stops too.
//
// For diagnostics (and the tests), window.callbridgeTakeover.stats tells the state and how much was sent.

import { request } from "./api.js";
import { $, show } from "./dom.js";
import * as listen from "./listen.js";

const RATE = 16000;
const BLOCK = 1024;

let allowed = false;
let callId = null;
let live = null; // { id, socket, stream, context }
const stats = { call: null, state: "idle", samples: 0, closed: null };

window.callbridgeTakeover = {
  get stats() {
    return { ...stats };
  },
};

export function allow(can) {
  allowed = can;
  if (!can) stop("");
  showCall(callId, false);
}

export function showCall(id, isLive) {
  if (live && id !== live.id) stop("");
  callId = id;
  show($("action-handback"), allowed && live !== null);
  $("action-takeover").disabled = live !== null;
}

function status(text) {
  $("action-state").textContent = text;
}

export async function start(id) {
  if (live) return;
  stats.call = id;
  stats.state = "microphone";
  stats.samples = 0;
  stats.closed = null;
  const context = new AudioContext({ sampleRate: RATE }); // inside the confirming click: it may start
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false } });
  } catch (err) {
    context.close();
    stats.state = "idle";
    status(`take-over: no microphone (${err.name || err})`);
    return;
  }
  live = { id, socket: null, stream, context };
  showCall(id, true);
  status("take-over: asking the worker…");
  const r = await request("POST", `/api/calls/${encodeURIComponent(id)}/takeover`);
  if (!r.ok) {
    stop(`takeover refused: ${r.data.error || `HTTP ${r.status}`}`);
    return;
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const socket = new WebSocket(
    `${scheme}//${location.host}/api/calls/${encodeURIComponent(id)}/takeover/audio?rate=${RATE}`,
  );
  socket.binaryType = "arraybuffer";
  live.socket = socket;
  socket.onmessage = (e) => {
    if (typeof e.data === "string" && JSON.parse(e.data).type === "talking") {
      stats.state = "talking";
      status(`takeover: done (${r.data.worker}): you are talking to the caller`);
    }
  };
  socket.onclose = (e) => {
    stats.closed = { code: e.code, reason: e.reason };
    if (live && live.socket === socket) stop(`take-over ended: ${e.reason || `closed (${e.code})`}`);
  };
  await context.audioWorklet.addModule("/static/mic-worklet.js");
  if (!live || live.socket !== socket) return; // handed back (or refused) meanwhile
  const tap = new AudioWorkletNode(context, "callbridge-mic-tap");
  const block = new Int16Array(BLOCK);
  let filled = 0;
  tap.port.onmessage = (e) => {
    for (const x of e.data) {
      block[filled++] = Math.max(-32768, Math.min(32767, Math.round(x * 32767)));
      if (filled === BLOCK) {
        filled = 0;
        if (socket.readyState === WebSocket.OPEN) {
          socket.send(block.slice(0).buffer);
          stats.samples += BLOCK;
        }
      }
    }
  };
  context.createMediaStreamSource(stream).connect(tap);
  tap.connect(context.destination); // a worklet node runs while connected; its output is silence
  if (!listen.listening()) listen.toggle(); // hear the caller
}

export async function handBack() {
  if (!live) return;
  const id = live.id;
  stop("take-over: handing back…");
  const r = await request("POST", `/api/calls/${encodeURIComponent(id)}/handback`);
  status(r.ok ? `handback: done (${r.data.worker})` : `handback refused: ${r.data.error || `HTTP ${r.status}`}`);
}

export function stop(message) {
  if (live) {
    const { socket, stream, context } = live;
    live = null;
    if (socket && (socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING)) {
      socket.close(1000, "handed back");
    }
    for (const track of stream.getTracks()) track.stop();
    context.close();
  }
  stats.state = "idle";
  showCall(callId, false);
  if (message !== undefined) status(message);
}

export function wire() {
  $("action-handback").addEventListener("click", handBack);
}
