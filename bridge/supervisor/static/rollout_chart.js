// The rollout experiment's figures, in each metric's unit: values, differences from the safe variant, and two
// drawings of a difference with its 95 % interval: a guardrail's trend over the candidate's calls, and a small bar.
//
// Both are inline SVG placed by SVG attributes (x, y, width, points...) and coloured by classes in console.css: the
// page's Content-Security-Policy (style-src 'self') refuses style= attributes and <style> elements, so anything
// placed by an inline style would silently stay where the browser put it. Higher is worse for every metric, and
// SVG's y grows downward: "worse" is drawn higher up.

import { utc, zone } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";

// An SVG element from data (attribute values and text only, never markup: like dom.js's h()).
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    el.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// A value of `key` (a metric or a health column) in its unit: *_rate a proportion, *_ms milliseconds, *_usd dollars,
// *_s seconds.
export function cell(key, value) {
  if (value === null || value === undefined) return "n/a";
  if (key.endsWith("_rate")) return `${(value * 100).toFixed(1)} %`;
  if (key.endsWith("_ms")) return `${Math.round(value)} ms`;
  if (key.endsWith("_usd")) return `$${value.toFixed(4)}`;
  if (key.endsWith("_s")) return `${value.toFixed(1)} s`;
  return String(value);
}

// A difference of `key` in its unit, signed. A rate's difference is in percentage points: "+5 %" would read as five
// per cent more of the safe variant's rate.
export function change(key, d) {
  const sign = d > 0 ? "+" : d < 0 ? "−" : "±";
  const a = Math.abs(d);
  if (key.endsWith("_rate")) return `${sign}${(a * 100).toFixed(1)} pp`;
  if (key.endsWith("_ms")) return `${sign}${Math.round(a)} ms`;
  if (key.endsWith("_usd")) return `${sign}$${a.toFixed(4)}`;
  if (key.endsWith("_s")) return `${sign}${a.toFixed(1)} s`;
  return `${sign}${a}`;
}

// What a difference's interval says against the margin (a guardrail's regression threshold): a word and a class.
// The engine's own tests split alpha over the guardrails; these words read the 95 % interval shown beside them.
export function judge(lo, hi, margin) {
  if (lo > 0) return ["worse", "worse"];
  if (hi < 0) return ["better", "better"];
  if (margin !== undefined && hi <= margin) return ["within margin", "within"];
  return ["undecided", "unsure"];
}

// The interval [lo, hi] as a bar on an axis around zero that holds it and the margin; zero and the margin ticked.
export function intervalBar(lo, hi, margin) {
  const W = 100, H = 12;
  const scale = Math.max(Math.abs(lo), Math.abs(hi), Math.abs(margin ?? 0)) * 1.1 || 1;
  const x = (v) => (W / 2) * (1 + v / scale);
  const [, kind] = judge(lo, hi, margin);
  return s("svg", { class: `ci ${kind}`, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", "aria-hidden": "true" },
    s("rect", { class: "ci-track", x: 0, y: 3, width: W, height: H - 6 }),
    s("rect", { class: "ci-range", x: x(lo), y: 2, width: Math.max(x(hi) - x(lo), 0.8), height: H - 4 }),
    s("line", { class: "ci-zero", x1: x(0), x2: x(0), y1: 0, y2: H }),
    margin === undefined ? null : s("line", { class: "ci-margin", x1: x(margin), x2: x(margin), y1: 0, y2: H }));
}

// The chart's box in viewBox units (it scales to its column: console.css gives it width 100 %, height auto); with
// marks, the plot starts lower (TM) and their labels take the row above it.
const W = 320, H = 160, L = 62, R = 10, T0 = 10, TM = 24, B = 30;
const MARK_Y = 12; // a mark label's baseline, above the plot
const CHAR_W = 6.5; // a generous width of one character of an 11 px label, in viewBox units

// What a mark of the candidate's (bridge.rollout.experiment: its steps, decisions and re-arms) says on the chart, and
// in its tooltip.
function markLabel(mark) {
  const share = mark.share === undefined ? "" : ` ${Number(mark.share.toFixed(1))} %`;
  return { promote: `→${share}`, rollback: "rollback", rearm: "re-armed", complete: "complete", srm: "SRM" }[mark.action]
    ?? mark.action;
}

function markTitle(mark, calls) {
  const when = utc(mark.t_unix).slice(0, 16);
  const share = mark.share === undefined ? "" : ` (${Number(mark.share.toFixed(1))} % of new calls after it)`;
  return `${mark.action}${share} at ${calls} candidate calls (${when} ${zone()})`;
}

// The marks on the chart: a line across the plot at each mark's calls, and its label above the plot where it fits
// beside the one before (a label that would overlap is left to the line's tooltip).
function markLines(marks, key, X, top, bottom) {
  let right = -Infinity;
  return marks.map((mark) => {
    const calls = mark.calls[key], x = X(calls), text = markLabel(mark);
    const half = (text.length * CHAR_W) / 2;
    const at = Math.min(Math.max(x, L + half), W - R - half);
    const fits = at - half >= right + 4;
    if (fits) right = at + half;
    return s("g", { class: `step-mark ${mark.action}`, "data-action": mark.action, "data-calls": calls },
      s("title", {}, markTitle(mark, calls)),
      s("line", { class: "step-line", x1: x.toFixed(1), x2: x.toFixed(1), y1: top, y2: bottom }),
      fits ? s("text", { class: "step-label", x: at.toFixed(1), y: MARK_Y, "text-anchor": "middle" }, text) : null);
  });
}

// The points the y axis is fitted to: those over the later half of the candidate's calls (at least the last
// RECENT_MIN). The first calls' intervals are far wider than the current one: fitted to them, the current interval
// and the margin would be one flat line.
const RECENT_MIN = 3;
export function recent(points) {
  const last = points[points.length - 1].calls;
  const later = points.filter((p) => p.calls >= last / 2);
  return later.length >= RECENT_MIN ? later : points.slice(-RECENT_MIN);
}

// Where an earlier, wider band leaves the axis: a small wedge inside the plot at that point, its tip on the edge.
function clipMarks(points, X, y0, y1, top, bottom) {
  const marks = [];
  for (const p of points) {
    const x = X(p.calls);
    for (const [out, edge, dir, side] of [[p.hi > y1, top, -1, "top"], [p.lo < y0, bottom, 1, "bottom"]]) {
      if (!out) continue;
      const wedge = [[x - 3, edge - 5 * dir], [x + 3, edge - 5 * dir], [x, edge]].map((c) => c.map((v) => v.toFixed(1)).join(","));
      marks.push(s("polygon", { class: `clip-mark ${side}`, "data-calls": p.calls, points: wedge.join(" ") }));
    }
  }
  return marks.length ? s("g", { class: "clipped" },
    s("title", {}, "earlier, wider intervals go past the axis: clipped at its edge, marked where they do"), marks) : null;
}

function span(values) {
  let lo = Math.min(...values), hi = Math.max(...values);
  if (hi - lo <= 0) {
    const pad = Math.abs(hi) * 0.1 || 1e-3;
    lo -= pad;
    hi += pad;
  }
  const pad = (hi - lo) * 0.06;
  return [lo - pad, hi + pad];
}

// A guardrail's trend: at each point (x: the candidate's calls so far, across every step; a point each hour and as
// its calls grow, the last one the current estimate the table shows), its difference from the safe variant (the
// line) and the 95 % interval (the band), with zero and the margin drawn across, and the candidate's steps and
// decisions (`marks`, those that carry their calls of this guardrail) marked where they happened.
export function trendChart(key, label, safe, m, marks = []) {
  const points = m.trend;
  const placed = marks.filter((k) => k.calls && Number.isFinite(k.calls[key]));
  const T = placed.length ? TM : T0;
  const xs = [...points, ...placed.map((k) => ({ calls: k.calls[key] }))].map((p) => p.calls);
  const [first, end] = [Math.min(...xs), Math.max(...xs)];
  let [x0, x1] = [first, end];
  if (x1 - x0 < 1) [x0, x1] = [x0 - 1, x1 + 1]; // one point: drawn in the middle
  const fitted = recent(points);
  const [y0, y1] = span([...fitted.flatMap((p) => [p.lo, p.hi]), 0, m.margin]);
  const X = (c) => L + ((c - x0) / (x1 - x0)) * (W - L - R);
  const Y = (v) => T + ((y1 - Math.min(Math.max(v, y0), y1)) / (y1 - y0)) * (H - T - B); // clipped to the plot
  const xy = (c, v) => `${X(c).toFixed(1)},${Y(v).toFixed(1)}`;
  // one point has no width: its interval is drawn as a narrow box around it
  const edges = points.length > 1 ? points.map((p) => [X(p.calls), p]) : [[X(points[0].calls) - 4, points[0]],
    [X(points[0].calls) + 4, points[0]]];
  const upper = edges.map(([x, p]) => `${x.toFixed(1)},${Y(p.hi).toFixed(1)}`);
  const lower = edges.map(([x, p]) => `${x.toFixed(1)},${Y(p.lo).toFixed(1)}`).reverse();
  const last = points[points.length - 1];
  const [word] = judge(last.lo, last.hi, m.margin);
  const tick = (v) => {
    const y = Y(v);
    // the band's extremes are labelled unless the zero's label is there already
    if (Math.abs(y - Y(0)) < 12) return null;
    return s("text", { class: "tick", x: L - 4, y: y + 3, "text-anchor": "end" }, change(key, v));
  };
  return s("svg", {
    class: "trend", "data-metric": key, viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${label}: difference from ${safe} over ${last.calls} candidate calls, now ${change(key, last.diff)} ` +
      `[${change(key, last.lo)}, ${change(key, last.hi)}]: ${m.reading ?? word}`,
  },
    s("title", {}, `${label}: the candidate's difference from ${safe} (line) and its 95 % interval (band), ` +
      `over the candidate's calls; the dashed line is the margin (a regression past it is what the test looks for); ` +
      `the axis fits the recent intervals, and earlier, wider ones are clipped at its edge`),
    s("rect", { class: "plot", x: L, y: T, width: W - L - R, height: H - T - B }),
    s("polygon", { class: "band", points: [...upper, ...lower].join(" ") }),
    s("line", { class: "zero", x1: L, x2: W - R, y1: Y(0), y2: Y(0) }),
    s("line", { class: "margin", x1: L, x2: W - R, y1: Y(m.margin), y2: Y(m.margin) }),
    s("polyline", { class: "line", points: points.map((p) => xy(p.calls, p.diff)).join(" ") }),
    markLines(placed, key, X, T, H - B),
    clipMarks(points, X, y0, y1, T, H - B),
    s("circle", { class: "now", cx: X(last.calls), cy: Y(last.diff), r: 2.5 }),
    s("text", { class: "tick", x: L - 4, y: Y(0) + 3, "text-anchor": "end" }, "0"),
    s("text", { class: "margin-label", x: W - R - 2, y: Y(m.margin) - 3, "text-anchor": "end" },
      `margin ${change(key, m.margin)}`),
    tick(Math.max(...fitted.map((p) => p.hi))), tick(Math.min(...fitted.map((p) => p.lo))),
    s("text", { class: "tick", x: L, y: H - B + 13 }, String(Math.round(first))),
    s("text", { class: "tick", x: W - R, y: H - B + 13, "text-anchor": "end" }, String(Math.round(end))),
    s("text", { class: "axis", x: (L + W - R) / 2, y: H - 4, "text-anchor": "middle" }, "candidate calls"));
}
