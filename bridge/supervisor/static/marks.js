// A call's marks, as the server computed them from the call's own events (bridge/supervisor/flags.py): each row
// of the live and ended lists, and the open call (its `marks` event), has `flags` ([{flag, label, severity, now}])
// and `severity` (the worst one). A mark is a chip named by its flag; one that holds now (on hold, in an outage) is
// drawn solid. A row takes the colour of its worst mark.

import { h } from "./dom.js";
import { MARK_LABEL } from "./kinds.js";

// A mark filter (a <select> whose first option is "all"): one option per mark, in the order marks are shown.
export function markOptions(select) {
  select.append(...Object.entries(MARK_LABEL).map(([flag, label]) => h("option", { value: flag }, label)));
}

// The chips of a list of flags.
export function chips(flags) {
  return (flags || []).map((f) =>
    h("span", { class: `mark ${f.severity}${f.now ? " now" : ""}`, "data-flag": f.flag,
      title: f.now ? `${f.label} (now)` : f.label }, f.label));
}

export function marks(call) {
  return h("td", { class: "marks" }, chips(call.flags));
}

// The class a row takes from its marks: "sev-bad", "sev-warn", "sev-info", or "".
export function severity(call) {
  return call.severity ? `sev-${call.severity}` : "";
}

// Does the call carry this flag ("" matches every call)?
export function flagged(call, flag) {
  return !flag || (call.flags || []).some((f) => f.flag === flag);
}
