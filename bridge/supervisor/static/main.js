// The console's entry point: sign-in and sign-out, then the per-plan strip, the live calls, the ended calls, the
// call detail, the actions audit and the rollout panel.

import * as actions from "./actions.js";
import { request, setSession } from "./api.js";
import * as audit from "./audit.js";
import * as calls from "./calls.js";
import * as detail from "./detail.js";
import * as ended from "./ended.js";
import { $, CLOCK, localClock, show, zone } from "./dom.js";
import * as listen from "./listen.js";
import * as reach from "./reach.js";
import * as rollout from "./rollout.js";
import * as strip from "./strip.js";

// Roles rank viewer < supervisor < admin: supervisors also act on calls and listen in, admins also change rollouts.
const RANK = { viewer: 0, supervisor: 1, admin: 2 };
let accounts = false; // the server has accounts (name and password), not the demo's shared tokens
const STRIP_WAIT_MS = 3000;
let generation = 0; // one per sign-in or sign-out: a late start of the panels belongs to the sign-in it came from

export function mayAct(session) {
  return Boolean(session) && RANK[session.role] >= RANK.supervisor;
}

// A live row's action: the call opens beside the table (if it is not open already), then the action starts.
function act(callId, action) {
  if (detail.current() !== callId) detail.open(callId);
  if (action === "listen") listen.listenTo(callId);
  else if (action === "whisper") actions.ask("whisper");
  else actions.ask(action);
}

function signedIn(session) {
  const mine = ++generation;
  setSession(session);
  $("who").textContent = session.name;
  $("who").title = `role: ${session.role}`;
  $("who").className = `role ${session.role}`;
  show($("who"), true);
  show($("views"), true);
  show($("signout"), true);
  show($("signin"), false);
  show($("console"), true);
  // the strip first (it sits above the calls): a slow strip holds the live calls back by STRIP_WAIT_MS at most
  const stripped = strip.start().catch(() => {});
  Promise.race([stripped, new Promise((done) => setTimeout(done, STRIP_WAIT_MS))]).then(() => {
    if (mine !== generation) return;
    calls.start(detail.open, act);
    ended.start(detail.open);
  });
  listen.allow(mayAct(session));
  actions.allow(mayAct(session));
  calls.allow(mayAct(session));
  audit.start(detail.open);
  listen.refreshAudit();
  rollout.start();
}

function signedOut(message) {
  generation++;
  setSession(null);
  calls.stop();
  ended.stop();
  strip.stop();
  listen.allow(false);
  actions.allow(false);
  calls.allow(false);
  audit.stop();
  listen.clearAudit();
  detail.close();
  rollout.stop();
  show($("console"), false);
  show($("who"), false);
  show($("views"), false);
  show($("signout"), false);
  show($("signin"), true);
  $("signin-error").textContent = message || "";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const token = $("token").value;
  const name = $("name").value;
  $("token").value = ""; // the token leaves the page at once; only the cookie stays, out of the page's reach
  $("signin-button").disabled = true;
  $("signin-error").textContent = "Signing in…";
  const r = await request("POST", "/auth/signin", { token, name });
  $("signin-button").disabled = false;
  if (r.ok) {
    $("signin-error").textContent = "";
    signedIn(r.data);
  } else {
    const wrong = accounts ? "Wrong name or password." : "Wrong token.";
    $("signin-error").textContent = r.status === 401 ? wrong : r.data.error || `HTTP ${r.status}`;
  }
}

async function signOut() {
  await request("POST", "/auth/signout");
  signedOut("Signed out.");
}

// The one clock setting (dom.js): every header and note names the zone; a change draws the page afresh.
function clockSetting() {
  $("clock").value = localClock() ? "local" : "utc";
  for (const span of document.querySelectorAll(".zone")) span.textContent = zone();
  $("clock").addEventListener("change", () => {
    localStorage.setItem(CLOCK, $("clock").value);
    location.reload();
  });
}

async function boot() {
  clockSetting();
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("detail-close").addEventListener("click", () => detail.dismiss());
  $("listen").addEventListener("click", () => listen.toggle());
  reach.watch($("console"));
  actions.wire();
  ended.wire();
  audit.wire();
  $("open-call").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("open-call-id").value.trim();
    if (id) detail.open(id);
  });
  document.addEventListener("console:signed-out", () => {
    if (!$("console").hidden) signedOut("Your session ended: sign in again.");
  });
  const r = await request("GET", "/auth/session");
  accounts = Boolean(r.data && r.data.accounts);
  if (accounts) {
    $("name-label").textContent = "Account";
    $("token-label").textContent = "Password";
    $("name").required = true;
  }
  if (r.ok) signedIn(r.data);
  else signedOut(r.data && r.data.enabled === false ? "The console is disabled: no supervisor token is set." : "");
}

boot();
