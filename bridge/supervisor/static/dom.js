// Building the page from data, as text only: every value becomes a text node or an attribute value, never markup.
// Nothing here (or in any module of the console) assigns innerHTML, outerHTML or insertAdjacentHTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A search form: run on submit, and once typing in any of its fields has stopped for quietMs.
export function searchForm(formId, fieldIds, run, quietMs) {
  let typing = null;
  $(formId).addEventListener("submit", (e) => {
    e.preventDefault();
    run();
  });
  for (const id of fieldIds) {
    $(id).addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(run, quietMs);
    });
  }
}

// The URL of `path` with each filled-in field of `fields` ([parameter, input id], in order) as a parameter, after
// `params`.
export function fieldsQuery(path, fields, params = {}) {
  const query = new URLSearchParams(params);
  for (const [key, id] of fields) {
    const value = $(id).value.trim();
    if (value) query.set(key, value);
  }
  return `${path}?${query}`;
}

export function $(id) {
  return document.getElementById(id);
}

export function show(el, visible) {
  el.hidden = !visible;
}

// The one clock of every screen of this browser (the console and the wallboard): "utc" (the default) or "local",
// the browser's own zone, named ("CST", "GMT+1").
export const CLOCK = "callbridge.clock";

export function localClock() {
  try {
    return localStorage.getItem(CLOCK) === "local";
  } catch (err) {
    return false;
  }
}

function local(date) {
  const parts = new Intl.DateTimeFormat("en-CA", { year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false, timeZoneName: "short" }).formatToParts(date);
  const part = (type) => (parts.find((p) => p.type === type) || {}).value || "";
  return { text: `${part("year")}-${part("month")}-${part("day")} ${part("hour")}:${part("minute")}:${part("second")}`,
    zone: part("timeZoneName") };
}

// The zone every time on the page is in: "UTC", or the browser's as its short name.
export function zone() {
  return localClock() ? local(new Date()).zone : "UTC";
}

// A moment as every table and note of the console says it: "YYYY-MM-DD hh:mm:ss", in the clock's zone (UTC unless
// this browser's clock says local; the headers and notes name it: zone()), to the second. `at`: Unix seconds (a
// number, or its text, as the audits store it) or an ISO 8601 text (the rollout audit's); "–" for none.
export function utc(at) {
  if (at === null || at === undefined || at === "") return "–";
  const seconds = Number(at);
  const date = Number.isFinite(seconds) ? new Date(seconds * 1000) : new Date(String(at));
  if (Number.isNaN(date.getTime())) return String(at);
  return localClock() ? local(date).text : date.toISOString().slice(0, 19).replace("T", " ");
}

// "m:ss" (or "h:mm:ss") of a number of seconds.
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
}

export function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}
