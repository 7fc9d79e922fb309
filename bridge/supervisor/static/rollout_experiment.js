// The guarded rollout in a rollout card: for each candidate, what the engine decided and will do next (its verdict),
// a trend chart per guardrail that is on with the candidate's steps and decisions marked, those guardrails in a table
// with the engine's reading of each, and the metrics that guard nothing folded away. Drawn from the panel's
// `experiment` (bridge.rollout.records.current, following the flag: bridge.supervisor.rollout_view.follow_flag),
// whatever its shape of variants and guardrails: a guardrail is on when the server gives its margin.

import { h, utc, zone } from "./dom.js";
import { cell, change, intervalBar, judge, trendChart } from "./rollout_chart.js";

// the candidate's state as the engine names it (bridge.rollout.experiment.Experiment.verdict); a rollback the flag
// has not followed yet is "rollback_pending" (bridge.supervisor.rollout_view.as_applied)
const STATE_LABEL = { testing: "Testing", rolled_back: "Rolled back", rollback_pending: "Rollback decided, not applied yet" };

function when(t) {
  return `${utc(t)} ${zone()}`;
}

// A decision as applied: what it did, on which calls, and when the flag took it (the audit's time).
function decided(d) {
  const total = d.weights ? Object.values(d.weights).reduce((a, b) => a + b, 0) : 0;
  const step = total > 0 && d.weights[d.variant] !== undefined ? ` to ${percent(100 * d.weights[d.variant] / total)}` : "";
  const applied = d.changed_flag ? `applied at ${when(d.applied_at_unix)}` : `recorded at ${when(d.applied_at_unix)} (the flag unchanged)`;
  return `${d.action} ${d.variant}${step}: decided on calls up to ${when(d.t_unix)}, ${applied}: ${readable(d.reason)}`;
}

// The engine's hours ("0.0666667 h", "1.5 h") as people read them: "4 min", "1:30 h".
export function readable(text) {
  return String(text).replace(/(?<![\d:.])(\d*\.?\d+) h\b/g, (_, hours) => {
    const s = Math.round(Number(hours) * 3600);
    if (s < 60) return `${s} s`;
    const m = Math.round(s / 60);
    return m < 60 ? `${m} min` : `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")} h`;
  });
}

function percent(value) {
  return `${Number(value.toFixed(1))} %`;
}

function tooFew(m) {
  return m.vs_safe ? "no point yet" : `too few calls (${m.too_few ?? "?"} more)`;
}

// A duration as people say it: "about a minute", "about 20 minutes", "about 5 hours", "about 3 days" (as
// bridge/serve/experiment_cli.py's how_long).
export function howLong(seconds) {
  const about = (n, unit, one) => {
    const k = Math.max(1, Math.floor(n + 0.5));
    return k === 1 ? `about ${one}` : `about ${k} ${unit}s`;
  };
  if (seconds < 90 * 60) return about(seconds / 60, "minute", "a minute");
  if (seconds < 36 * 3600) return about(seconds / 3600, "hour", "an hour");
  return about(seconds / 86400, "day", "a day");
}

// The engine's reading of a guardrail against its margin (bridge.rollout.experiment) and the class it is drawn with.
const READING_CLASS = {
  "better": "better",
  "no clear difference": "unsure",
  "slightly worse, within tolerance": "within",
  "worse, perhaps beyond its margin": "worse",
  "worse than its margin": "worse",
};

function reading(m) {
  if (!m.vs_safe) return ["too few calls", "few"];
  if (m.reading) return [m.reading, READING_CLASS[m.reading] ?? "unsure"];
  return judge(m.vs_safe.ci95[0], m.vs_safe.ci95[1], m.margin);
}

// The flag is on weights no finished call was drawn under yet (a step, a rollback, a change, the kill switch; or no
// call of the plan has ended at all): the verdicts show its step; the figures are the calls' before.
function pendingNote(exp, safe) {
  const p = exp.pending;
  if (!p) return null;
  const shares = Object.entries(p.shares).map(([n, s]) => `${n} ${percent(s)}`).join(", ");
  const none = exp.epoch === null || exp.epoch === undefined;
  const text = none
    ? `No call of this plan has ended yet (${shares} of new calls): the verdicts wait for the first ones.`
    : p.kill
      ? `The kill switch is on: every new call goes to ${safe}. No call since has ended yet: the figures below ` +
        "are from the calls before."
      : `The weights changed: ${shares} of new calls. No call under them has ended yet: the verdicts wait for the ` +
        "first ones; the figures below are from the calls before.";
  return h("p", { class: none ? "muted pending" : "warning pending", role: "status" }, text);
}

// The experiment's notes that concern every candidate: records left out as evidence, unsigned records, the split.
function notes(exp) {
  const rejected = Object.entries(exp.rejected || {}).filter(([, n]) => n > 0);
  const left = rejected.reduce((sum, [, n]) => sum + n, 0);
  return [
    left ? h("p", { class: "warning rejected", role: "alert" },
      `${left} outcome record${left === 1 ? "" : "s"} left out as evidence (${rejected.map(([why, n]) => `${n} ${why}`)
        .join(", ")}): not signed with this node's rollout_key.`) : null,
    exp.signed ? null : h("p", { class: "muted unsigned" },
      "Outcome records are not signed (no rollout_key): anyone who can write to Redis can add evidence."),
    exp.srm ? h("p", { class: "warning srm-warning", role: "alert" },
      "Sample-ratio mismatch: the split of calls is not what the weights draw, so every comparison may be biased. ",
      h("span", { class: "reason" }, `The engine: “${exp.srm.reason}”.`)) : null,
  ];
}

function verdict(name, exp, safe) {
  const row = exp.estimates[name], v = row.verdict;
  const last = exp.decisions.filter((d) => d.variant === name).pop();
  const waiting = v.waiting_for || [];
  return h("div", { class: `verdict state-${v.state}${v.pending ? " pending" : ""}`, "data-state": v.state },
    h("p", { class: "verdict-head" },
      h("strong", { class: "state" }, STATE_LABEL[v.state] ?? v.state), " ",
      h("span", { class: "step" }, v.share === null ? "step: weights not known" : `step: ${percent(v.share)} of new calls`),
      " · ", h("span", { class: "holdout" }, v.holdout === null ? "holdout: none before the last step"
        : `holdout: ${percent(v.holdout)} kept on ${safe}`),
      " · ", h("span", { class: "calls" }, `${row.calls} calls (${safe}: ${exp.estimates[safe]?.calls ?? 0})`)),
    v.srm && !exp.srm ? h("p", { class: "warning srm-warning", role: "alert" },
      "Sample-ratio mismatch: promotions stop; rollback stays armed.") : null,
    v.srm ? null : h("p", { class: "srm muted" },
      `Sample ratio: the split matches the weights so far (log e-value ${v.srm_log_e_value}).`),
    h("p", { class: "next" }, h("strong", {}, "Next: "), readable(v.next)),
    waiting.length ? h("div", { class: "waiting" }, "Waiting for:",
      h("ul", {}, waiting.map((w) => h("li", {}, readable(w))))) : null,
    v.more_calls === null || v.more_calls === undefined ? null : h("p", { class: "more" }, v.more_calls > 0
      ? `About ${v.more_calls} more ${name} calls before the next step` +
        (v.more_time_s ? `: ${howLong(v.more_time_s)} at current traffic.` : ".")
      : "Enough calls for the next step: the time on the step or a test still holds it."),
    v.probe ? h("p", { class: "probe" }, probed(v.probe, safe)) : null,
    last ? h("p", { class: "decided" }, `Last decision: ${decided(last)}`) : null);
}

// The latest probe of the safe variant's model (bridge.rollout.probes) and what the breaker makes of it.
function probed(p, safe) {
  const got = p.ok ? `opened in ${Math.round(p.ms ?? 0)} ms` : `failed${p.error ? ` (${p.error})` : ""}`;
  const means = p.ok ? "a fine call of the safe variant for the breaker" : "a shared outage: the breaker waits";
  return `Latest probe of ${safe}'s model: ${got} at ${when(p.at_unix)} (${means}).`;
}

function metricRow(name, safe, exp, key, label, guarding) {
  const m = exp.estimates[name][key], vs = m.vs_safe;
  const safeValue = exp.estimates[safe]?.[key]?.value ?? null;
  const [word, kind] = reading(m);
  return h("tr", { "data-variant": name, "data-metric": key },
    h("th", { scope: "row" }, label),
    h("td", { class: "safe-value" }, cell(key, safeValue)),
    h("td", { class: "value" }, cell(key, m.value)),
    h("td", { class: "diff" }, vs ? [change(key, vs.diff), " ",
      h("span", { class: "interval" }, `[${change(key, vs.ci95[0])}, ${change(key, vs.ci95[1])}]`)] : tooFew(m)),
    h("td", { class: "bar" }, vs ? intervalBar(vs.ci95[0], vs.ci95[1], m.margin) : ""),
    // a margin is relative to the safe variant's value: none without one
    guarding ? h("td", { class: "margin" }, safeValue === null ? "n/a" : change(key, m.margin)) : null,
    guarding ? h("td", { class: `word ${kind}` }, word) : null);
}

// What the columns are: the values are each variant's own over all its calls; the difference compares like with like.
const VALUE_TITLE = "the variant's own value over all its calls (the safe variant's: every call; the candidate's: " +
  "since it was armed; a latency: the geometric mean), whatever the weights and hour they came under";
const DIFF_TITLE = "the candidate against the safe variant's calls under the same weights and in the same hour, with " +
  "its 95 % interval: it need not equal the gap between the two values";

function metricTable(name, safe, exp, keys, labels, guarding) {
  const head = [["Metric"], [`${safe} (safe), all calls`, VALUE_TITLE, "safe-value"],
    [`${name}, all calls`, VALUE_TITLE, "value"], ["Difference, same weights and hour (95 %)", DIFF_TITLE, "diff"],
    [h("span", { class: "sr-only" }, "Interval drawn"), null, undefined, "bar"]]
    .concat(guarding ? [["Margin"], ["Reading", "the engine's reading of the interval against the margin"]] : []);
  return h("div", { class: "table-box" }, h("table", { class: guarding ? "guardrails" : "others" },
    h("thead", {}, h("tr", {}, head.map(([t, title, key, kind]) => h("th", { title, "data-col": key, class: kind }, t)))),
    h("tbody", {}, keys.map((k) => metricRow(name, safe, exp, k, labels[k] || k, guarding)))));
}

function valueNote(name, safe) {
  return h("p", { class: "muted value-note" },
    `The values are each variant's over all its calls (${safe}: every call; ${name}: since it was armed; a latency: ` +
    "the geometric mean). The difference compares the candidate with the safe variant's calls under the same " +
    "weights and in the same hour, so it need not equal the gap between the two values.");
}

function candidate(dialplan, name, exp, safe, labels) {
  const row = exp.estimates[name];
  const keys = Object.keys(labels).filter((k) => row[k]).concat(Object.keys(row)
    .filter((k) => !(k in labels) && row[k] && typeof row[k] === "object" && "value" in row[k]));
  const on = keys.filter((k) => "margin" in row[k]);
  const off = keys.filter((k) => !("margin" in row[k]));
  const marks = row.verdict.marks || [];
  const charts = on.map((k) => {
    const m = row[k], label = labels[k] || k;
    const drawn = Boolean(m.vs_safe && m.trend && m.trend.length);
    const said = drawn ? h("span", { class: "muted reading" }, reading(m)[0])
      : h("span", { class: "too-few muted" }, tooFew(m));
    return h("figure", { class: "guardrail", "data-metric": k },
      h("figcaption", {}, h("strong", {}, label), " ", said), drawn ? trendChart(k, label, safe, m, marks) : null);
  });
  return h("div", { class: "candidate", "data-variant": name },
    h("h4", {}, `${name} against ${safe} (safe)`),
    verdict(name, exp, safe),
    h("div", { class: "charts" }, charts),
    metricTable(name, safe, exp, on, labels, true),
    valueNote(name, safe),
    off.length ? h("details", { class: "other-metrics", "data-keep": `${dialplan}/${name}/others` },
      h("summary", {}, "other metrics (not guarding)"),
      metricTable(name, safe, exp, off, labels, false)) : null);
}

// The experiment part of dialplan `dp`'s card (null when the server sent none); `labels`: metric key -> label.
export function experimentSection(dp, labels) {
  const exp = dp.experiment;
  if (!exp) return null;
  const safe = dp.safe_variant;
  const candidates = Object.keys(exp.estimates).filter((v) => exp.estimates[v].verdict);
  return h("div", { class: "experiment" },
    h("h4", {}, "Guarded rollout ", h("span", { class: "muted" },
      `(epoch ${exp.epoch ?? "none yet"}; α ${exp.alpha} shared by the guardrails; each candidate against ${safe})`)),
    notes(exp),
    pendingNote(exp, safe),
    candidates.map((c) => candidate(dp.dialplan, c, exp, safe, labels)),
    exp.decisions.length ? h("details", { class: "decisions", "data-keep": `${dp.dialplan}/decisions` },
      h("summary", {}, `Decisions (${exp.decisions.length})`),
      h("ul", {}, exp.decisions.map((d) => h("li", { class: "decided" }, decided(d))))) : null,
    exp.refused_decisions ? h("p", { class: "muted refused-decisions" },
      `${exp.refused_decisions} decision${exp.refused_decisions === 1 ? "" : "s"} the engine computed ` +
      "that the flag refused (it had moved off the weights decided on) are not shown: they changed nothing.") : null);
}
