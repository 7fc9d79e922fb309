// A supervisor's actions on the open call (POST /api/calls/{id}/hangup, /transfer, /whisper, /takeover): each one
// asks for a confirmation in the page first. Viewers get no buttons (the server refuses them anyway). Take-over's
// microphone, socket and hand-back are takeover.js's.

import { request } from "./api.js";
import { $, show } from "./dom.js";
import * as takeover from "./takeover.js";

const QUESTIONS = {
  hangup: "Hang up this call? The agent says goodbye, then the call ends.",
  transfer: "Transfer this call to the plan's human target?",
  whisper: "Tell the agent this for the rest of the call?",
  takeover: "Take over this call? The agent is muted and the caller hears your microphone until you hand back.",
};
let allowed = false;
let callId = null;
let pending = null;

export function allow(yes) {
  allowed = yes;
  takeover.allow(yes);
  showCall(callId, false);
}

export function showCall(id, live) {
  callId = id;
  cancel();
  show($("actions"), allowed && Boolean(id) && live);
  takeover.showCall(id, live);
}

function ask(action) {
  if (action === "whisper" && !$("whisper-text").value.trim()) {
    $("action-state").textContent = "Type what the agent should do first.";
    return;
  }
  pending = action;
  $("action-question").textContent = QUESTIONS[action];
  show($("action-confirm"), true);
  $("action-state").textContent = "";
}

function cancel() {
  pending = null;
  show($("action-confirm"), false);
}

async function confirmed() {
  const action = pending;
  const id = callId;
  cancel();
  if (!action || !id) return;
  if (action === "takeover") return takeover.start(id);
  const body = action === "whisper" ? { text: $("whisper-text").value.trim() } : action === "transfer" ? {} : undefined;
  $("action-state").textContent = "Sending…";
  const r = await request("POST", `/api/calls/${encodeURIComponent(id)}/${action}`, body);
  if (r.ok) {
    if (action === "whisper") $("whisper-text").value = "";
    $("action-state").textContent = `${action}: done (${r.data.worker})`;
  } else {
    $("action-state").textContent = `${action} refused: ${r.data.error || `HTTP ${r.status}`}`;
  }
}

export function wire() {
  for (const button of document.querySelectorAll("#actions button[data-action]")) {
    button.addEventListener("click", () => ask(button.dataset.action));
  }
  $("action-yes").addEventListener("click", confirmed);
  $("action-no").addEventListener("click", cancel);
  takeover.wire();
}
