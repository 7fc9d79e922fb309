// The wallboard: the figures a room reads from across the floor (GET /api/wallboard; bridge/supervisor/board.py says
// what each tile counts, bridge/supervisor/wall_rollout.py each rollout row). A tile turns red when its value passes
// its threshold (this screen's, else the plan's) and says so in words, announced once in a polite live region; with
// sound allowed, the page sounds once each time a tile turns red. Every text is sized to its tile (wallboard.css),
// and one that still overflows is shrunk until it fits (fit).

import { CLOCK, utc, zone } from "./dom.js";

const EVERY_MS = 2000;
const STORE = "callbridge.wallboard";
const board = document.getElementById("board");
const state = { plan: new URLSearchParams(location.search).get("plan") || "", red: new Set(), beeps: 0, updates: 0 };
window.__wallboard = state; // what the page's tests read
let audio = null;

function saved() {
  try {
    return JSON.parse(localStorage.getItem(STORE) || "{}");
  } catch (err) {
    return {};
  }
}

function save(settings) {
  localStorage.setItem(STORE, JSON.stringify(settings));
}

// A duration: "m:ss" under an hour, "h:mm:ss" from an hour.
function clock(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const two = (n) => String(n).padStart(2, "0");
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60);
  return hh ? `${hh}:${two(mm)}:${two(s % 60)}` : `${mm}:${two(s % 60)}`;
}

// A moment as "hh:mm:ss UTC", or in this browser's zone with its name ("04:52:31 CST") when the clock says local.
function moment(unixSeconds) {
  return `${utc(unixSeconds).slice(11)} ${zone()}`;
}

const COUNT = new Intl.NumberFormat("en-US");

function shown(tile, capacity) {
  const v = tile.value;
  if (v === null || v === undefined) return "–";
  if (tile.unit === "share") return `${Math.round(v * 100)} %`;
  if (tile.unit === "seconds") return clock(v);
  if (tile.name === "calls_now") return `${COUNT.format(v)} / ${COUNT.format(capacity)}`;
  return COUNT.format(v);
}

function limitText(tile, limit) {
  const value = tile.unit === "share" ? `${Math.round(limit * 100)} %` : tile.unit === "seconds" ? clock(limit) : limit;
  return tile.red_when === "below" ? `at or below ${value}` : `at or above ${value}`;
}

function threshold(tile) {
  if (tile.red_when === "never") return null;
  const mine = (saved().thresholds || {})[tile.name];
  return mine === undefined || mine === null ? tile.threshold : mine;
}

function isRed(tile) {
  const limit = threshold(tile);
  if (tile.value === null || limit === null || limit === undefined) return false;
  return tile.red_when === "below" ? tile.value <= limit : tile.value >= limit;
}

function beep() {
  state.beeps += 1;
  try {
    audio = audio || new AudioContext();
    const tone = audio.createOscillator();
    const level = audio.createGain();
    tone.frequency.value = 880;
    level.gain.value = 0.2;
    tone.connect(level).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.4);
  } catch (err) {
    // no audio device: the tile still says it in words and colour
  }
}

function line(tag, className, text) {
  const el = document.createElement(tag);
  el.className = className;
  el.textContent = text;
  return el;
}

function tileElement(tile, capacity) {
  const red = isRed(tile);
  const section = document.createElement("section");
  section.className = `tile${red ? " red" : ""}`;
  section.dataset.tile = tile.name;
  section.dataset.state = red ? "red" : "ok";
  section.setAttribute("aria-labelledby", `tile-${tile.name}`);
  const title = line("h2", "label", tile.label);
  title.id = `tile-${tile.name}`;
  section.append(title, line("p", "value", shown(tile, capacity)));
  if (tile.detail) section.append(line("p", "detail", tile.detail));
  if (red) section.append(line("p", "alert", `ALERT: ${limitText(tile, threshold(tile))}`));
  section.append(line("p", "note", tile.explain));
  return section;
}

// Shrink a text until it fits its tile: the value first (to a third of its size), then every line of the tile.
function fit(tile) {
  const value = tile.querySelector(".value");
  const texts = [...tile.querySelectorAll("h2, p")];
  const size = (el) => parseFloat(getComputedStyle(el).fontSize);
  const wide = (el) => el.scrollWidth > el.clientWidth + 0.5;
  const tall = () => tile.scrollHeight > tile.clientHeight + 0.5;
  for (const el of texts) {
    if (wide(el)) el.style.fontSize = `${Math.floor(size(el) * (el.clientWidth / el.scrollWidth) * 10) / 10}px`;
  }
  const least = size(value) / 3;
  for (let i = 0; i < 40 && tall(); i += 1) {
    const shrink = size(value) > least ? [value] : texts;
    for (const el of shrink) el.style.fontSize = `${size(el) * 0.92}px`;
  }
}

function fitAll() {
  for (const tile of board.querySelectorAll(".tile")) fit(tile);
}

function cell(tag, text, className) {
  const el = document.createElement(tag);
  el.textContent = text;
  if (className) el.className = className;
  if (tag === "th") el.scope = "col";
  return el;
}

const ROLLOUT_COLUMNS = [
  ["variant", "Variant"], ["share", "Share"], ["calls_now", "Calls now"], ["handled", "Handled, 1 h"],
  ["abandoned", "Abandoned, 1 h"], ["fallback", "On fallback now"], ["trouble", "In trouble now"],
  ["verdict", "Verdict"],
];

function rolloutTable(plan) {
  const table = document.createElement("table");
  table.dataset.dialplan = plan.dialplan;
  const caption = document.createElement("caption");
  caption.append(`Rollout of ${plan.dialplan}: `);
  if (plan.kill) {
    const who = plan.kill.by ? `${plan.kill.by} (${plan.kill.role})` : `nobody recorded (counted as ${plan.kill.role})`;
    const since = plan.kill.at ? ` since ${moment(Date.parse(plan.kill.at) / 1000)}` : "";
    const why = plan.kill.reason ? `: “${plan.kill.reason}”` : "";
    caption.append(line("span", "kill", `KILL SWITCH ON, every call on ${plan.safe}`),
      ` held by ${who}${since}${why}`);
  } else {
    caption.append("kill switch off");
  }
  const head = document.createElement("tr");
  head.append(...ROLLOUT_COLUMNS.map(([key, label]) => cell("th", label, key === "verdict" ? "verdict" : "")));
  const body = document.createElement("tbody");
  for (const v of plan.variants) {
    const tr = document.createElement("tr");
    tr.dataset.variant = v.variant;
    if (v.trouble > 0 || v.verdict === "rolled back") tr.className = "bad";
    tr.append(...ROLLOUT_COLUMNS.map(([key]) => {
      if (key === "share") return cell("td", `${Math.round(v.share)} %`);
      if (key === "variant") return cell("td", v.variant + (v.variant === plan.safe ? " (safe)" : ""));
      if (key === "verdict") return cell("td", v.verdict, "verdict");
      return cell("td", COUNT.format(v[key]));
    }));
    body.append(tr);
  }
  const thead = document.createElement("thead");
  thead.append(head);
  table.append(caption, thead, body);
  const box = document.createElement("div");
  box.className = "table-box";
  box.tabIndex = 0; // it scrolls sideways on a narrow screen
  box.setAttribute("role", "region");
  box.setAttribute("aria-label", `Rollout of ${plan.dialplan}`);
  box.append(table);
  return box;
}

function renderRollout(rollouts) {
  const section = document.getElementById("rollout");
  section.hidden = !rollouts.length;
  const defs = line("p", "defs",
    "Handled and abandoned: the last hour's calls of each variant. On fallback: its calls running on its fallback " +
    "model (recovered, not in trouble). Verdict: what the flag applies now (safe, testing, promoted, held by the " +
    "kill switch, off, or rolled back).");
  document.getElementById("rollout-plans").replaceChildren(...rollouts.map(rolloutTable), ...(rollouts.length ? [defs] : []));
}

function announce(tiles) {
  if (!tiles.length) return;
  const said = tiles.map((t) => `${t.label} turned red: ${shown(t, state.last ? state.last.capacity : 0)}, ` +
    limitText(t, threshold(t))).join(". ");
  document.getElementById("announce").textContent = said;
}

function render(data) {
  const turnedRed = data.tiles.filter((t) => isRed(t) && !state.red.has(t.name));
  state.red = new Set(data.tiles.filter(isRed).map((t) => t.name));
  state.last = data;
  board.replaceChildren(...data.tiles.map((t) => tileElement(t, data.capacity)));
  fitAll();
  renderRollout(data.rollouts || []);
  if (turnedRed.length && saved().sound) beep();
  announce(turnedRed);
  state.updates += 1;
  document.getElementById("updated").textContent = `Updated ${moment(data.at_unix)}${data.capped ? " (recent calls only)" : ""}`;
}
state.render = render; // the layout tests draw the widest figures with it

function fillPlans(plans) {
  const select = document.getElementById("plan");
  if (select.options.length > 1) return;
  for (const name of plans) {
    const option = document.createElement("option");
    option.value = option.textContent = name;
    select.append(option);
  }
  select.value = state.plan;
}

async function load() {
  const query = state.plan ? `?plan=${encodeURIComponent(state.plan)}` : "";
  let r;
  try {
    r = await fetch(`/api/wallboard${query}`, { credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    document.getElementById("updated").textContent = "The server did not answer: the figures may be old.";
    return;
  }
  if (r.status === 401) {
    document.getElementById("signed-out").hidden = false;
    board.replaceChildren();
    return;
  }
  const data = await r.json();
  if (!r.ok) {
    document.getElementById("updated").textContent = data.error || `HTTP ${r.status}`;
    return;
  }
  document.getElementById("signed-out").hidden = true;
  fillPlans(data.plans);
  document.getElementById("plan-name").textContent = state.plan || "all plans";
  render(data);
  thresholdForm(data.tiles);
}

// The form of this screen's thresholds, built afresh for each plan: its placeholders are that plan's own.
function thresholdForm(tiles) {
  const form = document.getElementById("threshold-form");
  if (form.dataset.plan === state.plan && form.elements.length) return;
  form.dataset.plan = state.plan;
  const mine = saved().thresholds || {};
  const labels = [];
  for (const tile of tiles.filter((t) => t.red_when !== "never")) {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "number";
    input.min = "0";
    input.step = "any";
    input.name = tile.name;
    const share = tile.unit === "share";
    const unit = share ? " (%)" : tile.unit === "seconds" ? " (s)" : "";
    const mineValue = mine[tile.name];
    input.value = mineValue === undefined || mineValue === null ? "" : String(share ? mineValue * 100 : mineValue);
    input.placeholder = tile.threshold === null ? "none" : String(share ? tile.threshold * 100 : tile.threshold);
    label.append(`${tile.label}${unit}, red ${tile.red_when === "below" ? "at or below" : "at or above"} `, input);
    labels.push(label);
  }
  form.replaceChildren(...labels);
  form.onchange = (e) => {
    const settings = saved();
    const thresholds = settings.thresholds || {};
    const tile = tiles.find((t) => t.name === e.target.name);
    const text = e.target.value.trim();
    if (text === "") delete thresholds[e.target.name];
    else thresholds[e.target.name] = tile && tile.unit === "share" ? Number(text) / 100 : Number(text);
    save({ ...settings, thresholds });
    if (state.last) render(state.last);
  };
}

document.getElementById("plan").addEventListener("change", (e) => {
  state.plan = e.target.value;
  state.red = new Set();
  history.replaceState(null, "", state.plan ? `?plan=${encodeURIComponent(state.plan)}` : location.pathname);
  load();
});
const clockMenu = document.getElementById("zone");
clockMenu.value = localStorage.getItem(CLOCK) === "local" ? "local" : "utc";
clockMenu.addEventListener("change", () => {
  localStorage.setItem(CLOCK, clockMenu.value);
  if (state.last) render(state.last);
});
const sound = document.getElementById("sound");
sound.checked = Boolean(saved().sound);
sound.addEventListener("change", () => {
  save({ ...saved(), sound: sound.checked });
  if (sound.checked) audio = audio || new AudioContext(); // a click allows the page to sound later
});
document.getElementById("edit-thresholds").addEventListener("click", (e) => {
  const panel = document.getElementById("thresholds");
  panel.hidden = !panel.hidden;
  e.target.setAttribute("aria-expanded", String(!panel.hidden));
});
new ResizeObserver(() => fitAll()).observe(board);
load();
setInterval(load, EVERY_MS);
