// The wallboard: the figures a room reads from across the floor (GET /api/wallboard; bridge/supervisor/board.py says
// what each tile counts). A tile turns red when its value passes its threshold (this screen's, else the plan's) and
// says so in words; with sound allowed, the page sounds once each time a tile turns red.

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

function clock(seconds) {
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function shown(tile, capacity) {
  const v = tile.value;
  if (v === null || v === undefined) return "–";
  if (tile.unit === "share") return `${Math.round(v * 100)} %`;
  if (tile.unit === "seconds") return clock(v);
  if (tile.name === "calls_now") return `${v} / ${capacity}`;
  return String(v);
}

function limitText(tile, limit) {
  const value = tile.unit === "share" ? `${Math.round(limit * 100)} %` : tile.unit === "seconds" ? clock(limit) : limit;
  return tile.red_when === "below" ? `at or below ${value}` : `at or above ${value}`;
}

function threshold(tile) {
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

function tileElement(tile, capacity) {
  const red = isRed(tile);
  const limit = threshold(tile);
  const section = document.createElement("section");
  section.className = `tile${red ? " red" : ""}`;
  section.dataset.tile = tile.name;
  section.dataset.state = red ? "red" : "ok";
  section.setAttribute("aria-labelledby", `tile-${tile.name}`);
  const title = document.createElement("h2");
  title.id = `tile-${tile.name}`;
  title.textContent = tile.label;
  const value = document.createElement("p");
  value.className = "value";
  value.textContent = shown(tile, capacity);
  const note = document.createElement("p");
  note.className = "note";
  note.textContent = red ? `ALERT: ${limitText(tile, limit)}` : tile.explain;
  section.append(title, value, note);
  return section;
}

function render(data) {
  const turnedRed = data.tiles.filter((t) => isRed(t) && !state.red.has(t.name));
  state.red = new Set(data.tiles.filter(isRed).map((t) => t.name));
  board.replaceChildren(...data.tiles.map((t) => tileElement(t, data.capacity)));
  if (turnedRed.length && saved().sound) beep();
  state.updates += 1;
  state.last = data;
  const at = new Date(data.at * 1000).toLocaleTimeString([], { hour12: false });
  document.getElementById("updated").textContent = `Updated ${at}${data.capped ? " (recent calls only)" : ""}`;
}

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

function thresholdForm(tiles) {
  const form = document.getElementById("threshold-form");
  if (form.elements.length) return;
  const mine = saved().thresholds || {};
  for (const tile of tiles) {
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
    form.append(label);
  }
  form.addEventListener("change", (e) => {
    const settings = saved();
    const thresholds = settings.thresholds || {};
    const tile = tiles.find((t) => t.name === e.target.name);
    const text = e.target.value.trim();
    if (text === "") delete thresholds[e.target.name];
    else thresholds[e.target.name] = tile && tile.unit === "share" ? Number(text) / 100 : Number(text);
    save({ ...settings, thresholds });
    if (state.last) render(state.last);
  });
}

document.getElementById("plan").addEventListener("change", (e) => {
  state.plan = e.target.value;
  state.red = new Set();
  history.replaceState(null, "", state.plan ? `?plan=${encodeURIComponent(state.plan)}` : location.pathname);
  load();
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
load();
setInterval(load, EVERY_MS);
