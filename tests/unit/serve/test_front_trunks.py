"""The listed trunks (``sip_trunk_sources``) at the front, as far as Python has them: group 2 of ``front.sources``
and the ``FRONT_TRUNKS`` switch of ``front.defs`` (kamailio.cfg's route[LISTED]), the start-up line's words, and
the one line ``serve`` logs at start while no trunk is listed and a limit meant for one caller would hold a trunk's
SBC (bridge/serve/trunks.py). Kamailio's behaviour is tests/integration/front/test_front_trunk_guard.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.serve import front_edge
from bridge.serve.front_edge import Edge
from bridge.serve.front_files import Listen, front_defs
from bridge.serve.trunks import ordinal, unlisted_trunk_warning


def test_the_trunks_are_group_2_of_the_address_file_beside_the_allow_list(tmp_path: Path) -> None:
    lines = front_edge.address_file(["192.0.2.0/24"], ["198.51.100.7", "2001:db8::1/128"]).splitlines()
    assert lines[1:] == ["1 192.0.2.0 24 0", "2 198.51.100.7 32 0", "2 [2001:db8::1] 128 0"]
    edge = Edge.from_settings(Settings(sip_trunk_sources=("198.51.100.7/32",)))
    assert edge.trunk_sources == ("198.51.100.7/32",)
    defs = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, edge=edge).splitlines()
    assert "#!define FRONT_TRUNKS" in defs and "#!define FRONT_ALLOWLIST" not in defs
    unlisted = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, edge=Edge()).splitlines()
    assert "#!define FRONT_TRUNKS" not in unlisted


def test_the_start_up_line_names_the_trunks_and_whom_a_guard_refuses() -> None:
    users = {"sip_auth_users": {"trunk1": "pw"}, "front_auth": True}
    listed = Edge.from_settings(Settings(sip_trunk_sources=("198.51.100.7/32",), **users)).describe()
    assert "trunks 198.51.100.7/32 (sip_trunk_sources)" in listed
    assert "a user guarded 300 s (its calls from unlisted sources refused) after 10 wrong passwords" in listed
    assert "each source outside the trunks holds at most 2 calls (486 beyond)" in listed
    unlisted = Edge.from_settings(Settings(**users)).describe()
    assert "no trunk listed (sip_trunk_sources)" in unlisted and "a user guarded 300 s (its calls refused)" in unlisted
    both = Edge.from_settings(Settings(front_allowed_sources=("192.0.2.0/24",), sip_trunk_sources=("192.0.2.7",)))
    assert "each source outside the allow-list and the trunks holds at most 2 calls" in both.describe()


def test_a_trunk_that_is_no_network_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="sip_trunk_sources"):
        Edge(trunk_sources=("not-a-net",)).check()


def test_with_the_shipped_settings_the_front_says_an_unlisted_sbc_gets_486_on_its_third_call() -> None:
    line = unlisted_trunk_warning(Settings(front="kamailio"))
    assert line == (
        "trunks: none listed (sip_trunk_sources is empty): each source address holds at most 2 calls through the "
        "front at once (front_calls_per_source), so a trunk's SBC gets 486 on its third concurrent call; list each "
        "trunk's SBC addresses in sip_trunk_sources"
    )
    guarded = unlisted_trunk_warning(Settings(front="kamailio", front_auth=True, sip_auth_users={"trunk1": "pw"}))
    assert "; 10 wrong passwords for a digest user from other addresses refuse its calls from every address for " in (
        guarded
    )
    assert unlisted_trunk_warning(Settings(front="kamailio", sip_trunk_sources=("198.51.100.7",))) == ""
    assert unlisted_trunk_warning(Settings(front="kamailio", front_calls_per_source=0)) == ""
    # an allow-list's sources have no limit of calls: only the guard would hold them
    assert unlisted_trunk_warning(Settings(front="kamailio", front_allowed_sources=("192.0.2.0/24",))) == ""


def test_without_a_front_serve_says_so_where_callers_outside_an_allow_list_may_call() -> None:
    line = unlisted_trunk_warning(Settings(sip_auth_users={"trunk1": "pw"}))
    assert "at most 2 calls at each worker at once (sip_calls_per_source), so a trunk's SBC gets 486 on its third" in (
        line
    )
    assert line.endswith("list each trunk's SBC addresses in sip_trunk_sources")
    assert "4 calls" in unlisted_trunk_warning(Settings(sip_allow_any_source=True, sip_calls_per_source=4))
    assert unlisted_trunk_warning(Settings()) == ""  # loopback callers only, who have no limit
    assert unlisted_trunk_warning(Settings(sip_allowed_sources=("192.0.2.0/24",), sip_auth_users={"t": "pw"})) == ""
    assert unlisted_trunk_warning(Settings(sip_auth_users={"t": "pw"}, sip_trunk_sources=("192.0.2.7",))) == ""


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 10, 11)] == ["first", "second", "third", "tenth", "11th"]
