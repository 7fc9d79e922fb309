// The console's entry point: sign-in and sign-out, then the live calls, the call detail and the rollout panel.

import { request, setSession } from "./api.js";
import * as calls from "./calls.js";
import * as detail from "./detail.js";
import { $, show } from "./dom.js";
import * as listen from "./listen.js";
import * as rollout from "./rollout.js";

function signedIn(session) {
  setSession(session);
  $("who").textContent = `${session.name}`;
  $("who").className = session.role === "operator" ? "role operator" : "role read-only";
  show($("who"), true);
  show($("signout"), true);
  show($("signin"), false);
  show($("console"), true);
  calls.start(detail.open);
  listen.allow(session.role === "operator");
  listen.refreshAudit();
  rollout.start();
}

function signedOut(message) {
  setSession(null);
  calls.stop();
  listen.allow(false);
  listen.clearAudit();
  detail.close();
  rollout.stop();
  show($("console"), false);
  show($("who"), false);
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
    $("signin-error").textContent = r.status === 401 ? "Wrong token." : r.data.error || `HTTP ${r.status}`;
  }
}

async function signOut() {
  await request("POST", "/auth/signout");
  signedOut("Signed out.");
}

async function boot() {
  $("signin-form").addEventListener("submit", signIn);
  $("signout").addEventListener("click", signOut);
  $("detail-close").addEventListener("click", () => detail.close());
  $("listen").addEventListener("click", () => listen.toggle());
  $("open-call").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("open-call-id").value.trim();
    if (id) detail.open(id);
  });
  document.addEventListener("console:signed-out", () => {
    if (!$("console").hidden) signedOut("Your session ended: sign in again.");
  });
  const r = await request("GET", "/auth/session");
  if (r.ok) signedIn(r.data);
  else signedOut(r.data && r.data.enabled === false ? "The console is disabled: no supervisor token is set." : "");
}

boot();
