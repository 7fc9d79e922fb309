"""The front's guard per digest user and its refusal of merged INVITEs, as far as Python has them: the settings reach
``front.defs`` (the routing script's numbers) and the start-up line, and Kamailio's new counters are exported."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from bridge.config import Settings
from bridge.serve import front_rpc
from bridge.serve.front import template_path
from bridge.serve.front_edge import Edge
from bridge.serve.front_files import Listen, front_defs


def test_the_user_guard_settings_reach_the_routing_script_and_the_start_up_line(tmp_path: Path) -> None:
    settings = Settings(
        front_auth=True,
        sip_auth_users={"trunk1": "pw"},
        front_auth_user_failures=4,
        front_auth_user_window_s=30,
        front_auth_user_ban_s=900,
    )
    edge = Edge.from_settings(settings)
    defs = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, edge=edge)
    for line in (
        '#!substdef "!FRONT_AUTH_USER_FAILURES!4!g"',
        '#!substdef "!FRONT_AUTH_USER_WINDOW_S!30!g"',
        '#!substdef "!FRONT_AUTH_USER_BAN_S!900!g"',
    ):
        assert line in defs.splitlines()
    words = "a user guarded 900 s (its calls refused) after 4 wrong passwords from unlisted sources, each within 30 s"
    assert words in edge.describe()


def test_the_shipped_guard_is_ten_wrong_passwords_a_minute_for_five_minutes(tmp_path: Path) -> None:
    edge = Edge.from_settings(Settings())
    assert (edge.auth_user_failures, edge.auth_user_window_s, edge.auth_user_ban_s) == (10, 60, 300)
    script = template_path().read_text()
    for name in ("FRONT_AUTH_USER_FAILURES", "FRONT_AUTH_USER_WINDOW_S", "FRONT_AUTH_USER_BAN_S"):
        assert f"#!ifndef {name}\n" in script  # a front.defs written by hand without them gets the same defaults


@pytest.mark.parametrize("field", ["front_auth_user_failures", "front_auth_user_window_s", "front_auth_user_ban_s"])
def test_a_guard_of_nothing_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: 0})


def test_the_new_counters_are_read_and_exported() -> None:
    counts = front_rpc.edge_counts({"front": {"refused_merged": 2, "refused_user_locked": 3, "user_locks": 1}})
    assert (counts["refused_merged"], counts["refused_user_locked"], counts["user_locks"]) == (2, 3, 1)
    assert front_rpc.EDGE_COUNTERS["refused_merged"] == ("FRONT_REFUSED", "merged")
    assert front_rpc.EDGE_COUNTERS["refused_user_locked"] == ("FRONT_REFUSED", "user_locked")
    assert front_rpc.EDGE_COUNTERS["user_locks"] == ("FRONT_USER_LOCKS", "")
    script = template_path().read_text()
    for name in counts:  # every counter serve reads is one the routing script declares
        assert f'"front.{name} ' in script, name
