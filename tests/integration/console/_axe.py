"""axe-core (npm's, installed by ``./dev setup`` into ``tests/integration/console/node_modules`` from the
``package.json`` beside this file) injected into a console page over CDP, and its findings told in words.

The page's Content-Security-Policy refuses scripts that are not the console's own; ``Runtime.evaluate`` is the
DevTools' and runs axe's source anyway, as a browser extension's would.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from _cdp import Page

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"


def axe_missing() -> str | None:
    """Why axe cannot run here (None: it can)."""
    if AXE.is_file():
        return None
    npm = "npm is on PATH" if shutil.which("npm") else "there is no npm (apt-get install npm)"
    return f"no axe-core at {AXE} ({npm}; ./dev setup runs npm ci in {HERE})"


def axe_version() -> str:
    return str(json.loads((AXE.parent / "package.json").read_text())["version"])


async def run_axe(page: Page, where: str) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now (WCAG 2.0-2.2 A and AA and axe's best practices), each with
    ``where`` (what the page showed) added."""
    if not await page.eval("typeof window.axe === 'object'"):
        await page.eval(AXE.read_text())
    options = {"resultTypes": ["violations"], "runOnly": {"type": "tag", "values": [
        "wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]}}  # fmt: skip
    found = await page.eval(
        f"axe.run(document, {json.dumps(options)}).then((r) => r.violations.map((v) => ({{id: v.id, impact: v.impact,"
        " help: v.help, nodes: v.nodes.map((n) => ({target: n.target.join(' '), impact: n.impact,"
        " summary: n.failureSummary, html: n.html.slice(0, 160)}))})))"
    )
    return [{**v, "where": where} for v in found]


def told(violations: list[dict[str, Any]]) -> str:
    """The violations as a person reads them: rule, impact and help, then each element with axe's reason."""
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({v['where']}; {len(v['nodes'])} element(s))")
        for node in v["nodes"][:8]:
            summary = " / ".join(s.strip() for s in (node["summary"] or "").splitlines()[1:] if s.strip())
            lines.append(f"    {node['target']}: {summary}\n      {node['html']}")
    return "\n".join(lines)
