"""The route table of docs/operating.md (*The supervisor API*) agrees with the routes the app registers: the same
routes, and each one's "token" column is who the route definition lets in (:mod:`bridge.supervisor.routes`, the
values the auth middleware enforces and the OpenAPI document is drawn from)."""

from __future__ import annotations

import re
from pathlib import Path

from bridge.supervisor import routes
from bridge.supervisor.api import create_app

OPERATING = Path(__file__).resolve().parents[2] / "docs" / "operating.md"
ROW = re.compile(r"^\| `(?P<method>[A-Z]+) (?P<path>/\S*)` \| (?P<access>[^|]+) \|")
PLACEHOLDER = re.compile(r"\{\w+\}")
UNLISTED = {"GET /", "POST /auth/signin", "POST /auth/signout", "GET /auth/session"}  # the console's own doors


def _key(method: str, path: str) -> str:
    return f"{method} {PLACEHOLDER.sub('{}', path)}"


def documented() -> dict[str, str]:
    text = OPERATING.read_text(encoding="utf-8")
    section = text[text.index("## The supervisor API") :]
    section = section[: section.index("\n## ", 1)]
    rows = [m for line in section.splitlines() if (m := ROW.match(line))]
    return {_key(m["method"], m["path"]): m["access"].strip() for m in rows}


def served() -> dict[str, str]:
    app = create_app(token="t", redis=None, rollouts=None)
    return {_key(r.method, r.path): r.access for r in routes.table_of(app)}


def test_the_docs_route_table_names_every_route_and_who_may_use_it() -> None:
    docs, app = documented(), served()
    assert set(docs) == set(app) - UNLISTED, set(docs) ^ (set(app) - UNLISTED)
    wrong = {route: (docs[route], app[route]) for route in docs if docs[route] != app[route]}
    assert not wrong, f"the docs' token column against the routes' (docs, routes): {wrong}"


def test_a_change_of_flags_takes_the_admin_role() -> None:
    assert served()["PUT /api/rollout/{}"] == "admin" == documented()["PUT /api/rollout/{}"]
    assert served()["PUT /api/rollout/{}/kill"] == "supervisor"
