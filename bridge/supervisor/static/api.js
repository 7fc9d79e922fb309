// The console's requests. The session is the HttpOnly cookie (the page cannot read it); the CSRF token the server
// gave at sign-in lives only in this module's memory and goes with every change, in the X-CSRF-Token header.

let csrf = null;

export function setSession(session) {
  csrf = session ? session.csrf : null;
}

export async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (err) {
    return { status: 0, ok: false, data: { error: "the server did not answer" } };
  }
  let data = null;
  try {
    data = await response.json();
  } catch (err) {
    data = { error: `HTTP ${response.status}` };
  }
  if (response.status === 401 && path !== "/auth/signin") signedOut();
  return { status: response.status, ok: response.ok, data };
}

// GET what `query()` names now, for a panel that reads it again and again: its data; or null when the panel stopped
// meanwhile (`running()` false: signed out), a newer query is on its way, or the request failed (the error is shown
// in `note`).
export async function current(query, running, note) {
  const asked = query();
  const r = await request("GET", asked);
  if (!running() || asked !== query()) return null;
  if (!r.ok) {
    note.textContent = r.data.error || `HTTP ${r.status}`;
    return null;
  }
  return r.data;
}

export function signedOut() {
  document.dispatchEvent(new CustomEvent("console:signed-out"));
}

// An EventSource that tells the page when its session is over (the server sends "signed-out", or refuses to reopen).
export function events(path, handlers) {
  const source = new EventSource(path);
  for (const [name, handler] of Object.entries(handlers)) {
    source.addEventListener(name, (e) => handler(JSON.parse(e.data)));
  }
  source.addEventListener("signed-out", () => {
    source.close();
    signedOut();
  });
  source.addEventListener("error", async () => {
    if (source.readyState !== EventSource.CLOSED) return; // reconnecting by itself
    const check = await request("GET", "/auth/session");
    if (check.ok && handlers.closed) handlers.closed();
  });
  return source;
}
