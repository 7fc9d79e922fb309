// Keyboard reach of the tables that scroll sideways in their box (.table-box, on a narrow screen or beside an open
// call): a box whose table is wider than it takes the focus (Tab, then the arrow keys scroll it) and is a region
// named by its table; a box whose table fits takes no focus, so the tab order has no stops that do nothing. Boxes
// come and go (the rollout cards are drawn again on every refresh): new ones are found as they are added.

const BOX = ".table-box";
const sized = new ResizeObserver((entries) => entries.forEach((e) => fit(e.target.closest(BOX))));
const seen = new WeakSet();

// A heading's own words (not its count, its notes or its buttons).
function words(heading) {
  return [...heading.childNodes].filter((n) => n.nodeType === Node.TEXT_NODE).map((n) => n.textContent).join("").trim();
}

// What the box holds, in words, unique on the page: the headings of the panel, card and candidate it is in, the
// heading just above it, and its table's own name ("Rollout, canary, Variants, and their recent health ...").
function name(box) {
  const parts = [];
  for (let el = box.parentElement; el; el = el.parentElement) {
    const heading = el.matches("section, article, .candidate") && el.querySelector("h2, h3, h4");
    if (heading) parts.unshift(words(heading));
  }
  const above = box.previousElementSibling;
  if (above && above.matches("h2, h3, h4")) parts.push(words(above));
  const table = box.querySelector("table");
  const by = table && table.getAttribute("aria-labelledby");
  const own = (table && table.getAttribute("aria-label")) || (by && document.getElementById(by)?.textContent);
  if (own) parts.push(own.trim());
  return parts.filter(Boolean).join(", ") || "Table";
}

function fit(box) {
  if (!box || !box.isConnected) return;
  const scrolls = box.scrollWidth > box.clientWidth + 1;
  if (scrolls && !box.hasAttribute("tabindex")) {
    box.setAttribute("tabindex", "0");
    box.setAttribute("role", "region");
    box.setAttribute("aria-label", `${name(box)} (scrolls sideways)`);
  } else if (!scrolls && box.hasAttribute("tabindex")) {
    for (const attr of ["tabindex", "role", "aria-label"]) box.removeAttribute(attr);
  }
}

function forget(box) {
  sized.unobserve(box);
  const table = box.querySelector("table");
  if (table) sized.unobserve(table);
  seen.delete(box);
}

function watchBox(box) {
  if (seen.has(box)) return;
  seen.add(box);
  sized.observe(box);
  const table = box.querySelector("table");
  if (table) sized.observe(table); // rows added make the table wider while the box keeps its size
}

// Watches every table box under `root`, now and as they are added.
export function watch(root) {
  root.querySelectorAll(BOX).forEach(watchBox);
  new MutationObserver((changes) => {
    for (const change of changes) {
      for (const [nodes, each] of [[change.removedNodes, forget], [change.addedNodes, watchBox]]) {
        for (const node of nodes) {
          if (node.nodeType !== Node.ELEMENT_NODE) continue;
          if (node.matches(BOX)) each(node);
          node.querySelectorAll(BOX).forEach(each);
        }
      }
    }
  }).observe(root, { childList: true, subtree: true });
}
