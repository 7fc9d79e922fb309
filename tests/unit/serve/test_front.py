"""The front door's pure parts: the caller's source behind a front, the generated Kamailio files, the control socket
client against a stand-in socket, and `serve --front kamailio` refusing to start without Kamailio."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.kamailio import FakeKamailio

from bridge.config import Settings
from bridge.errors import ConfigError
from bridge.serve import front, front_dialogs, front_edge, front_files, front_process, front_rpc, pool
from bridge.serve.front import node_destinations
from bridge.serve.front_edge import Edge
from bridge.serve.front_files import Destination, FrontError, Listen, dispatcher_list, front_defs, parse_peer
from bridge.serve.front_rpc import Dispatch, destinations_of, matches, rpc_call, set_state
from bridge.sip.access import caller_source, digest_ha1, front_copies_ok, parse_networks

FRONT = parse_networks(["127.0.0.2/32"])

# -- the caller's source ------------------------------------------------------------------------------------------


def test_the_header_counts_only_from_a_trusted_front() -> None:
    assert caller_source("127.0.0.2:5060", ["192.0.2.7:5071"], FRONT) == "192.0.2.7:5071"
    # the same header from anyone else is ignored: the packet's source stands
    assert caller_source("198.51.100.9:5060", ["192.0.2.7:5071"], FRONT) == "198.51.100.9:5060"
    # no front configured: never trusted
    assert caller_source("127.0.0.2:5060", ["192.0.2.7:5071"], ()) == "127.0.0.2:5060"


def test_only_the_fronts_one_copy_counts_and_garbage_is_ignored() -> None:
    # two copies: one got past the front, which removes every copy a caller sent; nobody is believed
    assert caller_source("127.0.0.2:5060", ["10.0.0.1:1", "192.0.2.7:5071"], FRONT) == "127.0.0.2:5060"
    assert not front_copies_ok([["192.0.2.7:5071"], ["10.0.0.1:1", "192.0.2.7:5071"]])
    assert front_copies_ok([["192.0.2.7:5071"], []])
    assert caller_source("127.0.0.2:5060", ["not an address"], FRONT) == "127.0.0.2:5060"
    assert caller_source("127.0.0.2:5060", [], FRONT) == "127.0.0.2:5060"
    assert caller_source("127.0.0.2:5060", ["[2001:db8::7]:5060"], FRONT) == "[2001:db8::7]:5060"


# -- settings -------------------------------------------------------------------------------------------------------


def test_with_a_front_the_workers_move_one_port_up_and_trust_it() -> None:
    plain = Settings(sip_port=5060, workers=2)
    assert [plain.worker_sip_port(i) for i in range(2)] == [5060, 5061]
    assert plain.trusted_fronts() == ()
    fronted = Settings(sip_port=5060, workers=2, front="kamailio", sip_host="10.1.2.3")
    assert [fronted.worker_sip_port(i) for i in range(2)] == [5061, 5062]
    assert fronted.trusted_fronts() == ("10.1.2.3",)
    wildcard = Settings(sip_host="0.0.0.0", front="kamailio", sip_trusted_fronts=("10.9.0.0/16",))
    assert wildcard.front_host == "127.0.0.1"
    assert wildcard.trusted_fronts() == ("10.9.0.0/16", "127.0.0.1")


# -- generated files ------------------------------------------------------------------------------------------------


def test_dispatcher_list_names_every_worker_with_its_cap() -> None:
    settings = Settings(
        sip_host="127.0.0.2", sip_port=5060, front="kamailio", front_peers=("127.0.0.3:5061", "[::1]:7000/2")
    )
    dests = node_destinations(settings, [(5061, 4), (5062, 4)])
    assert dests == [
        Destination("127.0.0.2", 5061, 4),
        Destination("127.0.0.2", 5062, 4),
        Destination("127.0.0.3", 5061, 4),
        Destination("::1", 7000, 2),
    ]
    lines = dispatcher_list(dests).splitlines()
    assert lines[1:] == [
        "1 sip:127.0.0.2:5061 8 0 duid=127.0.0.2:5061;maxload=4",
        "1 sip:127.0.0.2:5062 8 0 duid=127.0.0.2:5062;maxload=4",
        "1 sip:127.0.0.3:5061 8 0 duid=127.0.0.3:5061;maxload=4",
        "1 sip:[::1]:7000 8 0 duid=[::1]:7000;maxload=2",
    ]


@pytest.mark.parametrize("bad", ["127.0.0.3", "127.0.0.3:port", "127.0.0.3:5061/0", ":5061", "h:99999"])
def test_bad_peers_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="front_peers"):
        parse_peer(bad, 4)


def test_front_defs_define_what_the_script_uses(tmp_path: Path) -> None:
    text = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=7)
    script = front.template_path().read_text()
    defined = {line.split("!")[2] for line in text.splitlines() if line.startswith("#!substdef")}
    defined |= {line.split()[1] for line in text.splitlines() if line.startswith("#!define")}
    used = {word for word in defined if word in script}
    assert used == defined  # nothing generated that the script ignores
    assert '#!substdef "!FRONT_LISTEN_UDP!udp:127.0.0.2:5060!g"' in text
    assert f'#!substdef "!FRONT_RPC_SOCKET!{tmp_path}/rpc.sock!g"' in text
    assert '#!substdef "!FRONT_RETRY_AFTER_S!7!g"' in text and "#!define FRONT_RETRY_AFTER\n" in text
    assert "#!define FRONT_RETRY_AFTER\n" not in front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=0)


def test_with_tls_the_front_listens_on_tls_and_lists_the_workers_tls_listeners(tmp_path: Path) -> None:
    text = front_defs(Listen("10.0.0.5", 5060, "203.0.113.10", 5161), tmp_path, retry_after_s=7)
    assert '#!substdef "!FRONT_LISTEN_TLS!tls:10.0.0.5:5161 advertise 203.0.113.10:5161!g"' in text
    assert f'#!substdef "!FRONT_TLS_CFG!{tmp_path}/tls.cfg!g"' in text and "#!define FRONT_TLS" in text
    script = front.template_path().read_text()
    assert all(name in script for name in ("FRONT_LISTEN_TLS", "FRONT_TLS_CFG", "FRONT_TLS"))
    settings = Settings(sip_host="10.0.0.5", sip_port=5060, sip_tls_port=5161, front="kamailio")
    listed = dispatcher_list(node_destinations(settings, [(5061, 4), (5062, 4)])).splitlines()
    assert "2 sip:10.0.0.5:5163;transport=tls 8 0 duid=10.0.0.5:5062;maxload=4" in listed
    assert "1 sip:10.0.0.5:5062 8 0 duid=10.0.0.5:5062;maxload=4" in listed


def test_behind_nat_the_front_advertises_the_public_address(tmp_path: Path) -> None:
    text = front_defs(Listen("10.0.0.5", 5060, advertise="203.0.113.10"), tmp_path, retry_after_s=7)
    assert '#!substdef "!FRONT_LISTEN_UDP!udp:10.0.0.5:5060 advertise 203.0.113.10:5060!g"' in text
    assert '#!substdef "!FRONT_LISTEN_TCP!tcp:10.0.0.5:5060 advertise 203.0.113.10:5060!g"' in text


# -- the control socket -----------------------------------------------------------------------------------------------


@pytest.fixture
def fake_front() -> Iterator[FakeKamailio]:
    with tempfile.TemporaryDirectory(prefix="cbf-") as tmp:  # short: a Unix socket path holds 108 bytes
        fake = FakeKamailio(Path(tmp) / "rpc.sock")
        yield fake
        fake.close()


def test_listing_parses_kamailios_answer(fake_front: FakeKamailio) -> None:
    states = destinations_of(rpc_call(fake_front.path, "dispatcher.list"))
    assert [(d.address, d.state, d.probing, d.load, d.max_calls) for d in states] == [
        ("127.0.0.2:5061", Dispatch.ACTIVE, True, 3, 4),
        ("127.0.0.2:5062", Dispatch.ACTIVE, True, 0, 4),
        ("127.0.0.3:5061", Dispatch.INACTIVE, True, 0, 4),
    ]


def test_a_dispatcher_letter_is_a_state_with_its_word() -> None:
    assert [(Dispatch(letter), Dispatch(letter).word) for letter in "AITD"] == [
        (Dispatch.ACTIVE, "active"),
        (Dispatch.INACTIVE, "inactive"),
        (Dispatch.TRYING, "trying"),
        (Dispatch.DRAINED, "drained"),
    ]
    assert Dispatch("X") is Dispatch.UNKNOWN and Dispatch("").word == "unknown"


def test_a_destination_as_json_for_the_drain_command(fake_front: FakeKamailio) -> None:
    first = destinations_of(rpc_call(fake_front.path, "dispatcher.list"))[0]
    text = json.dumps(first.to_json())
    assert json.loads(text) == {"address": "127.0.0.2:5061", "state": "A", "probing": True, "load": 3, "max_calls": 4}


def test_drain_a_node_then_one_worker_back(fake_front: FakeKamailio) -> None:
    after = set_state(fake_front.path, "127.0.0.2", "d")
    assert [(d.address, d.state) for d in after] == [
        ("127.0.0.2:5061", Dispatch.DRAINED),
        ("127.0.0.2:5062", Dispatch.DRAINED),
    ]
    assert fake_front.states["127.0.0.3:5061"] == "IP"  # the other node is untouched
    assert ("dispatcher.set_state", ["d", 1, "sip:127.0.0.2:5061"]) in fake_front.calls
    after = set_state(fake_front.path, "127.0.0.2:5062", "ap")
    assert [(d.address, d.state, d.probing) for d in after] == [("127.0.0.2:5062", Dispatch.ACTIVE, True)]
    assert fake_front.states["127.0.0.2:5061"] == "DX"


def test_drain_names_the_workers_when_nothing_matches(fake_front: FakeKamailio) -> None:
    with pytest.raises(FrontError, match=r"no worker of the front matches '10\.0\.0\.1'.*127\.0\.0\.3:5061"):
        set_state(fake_front.path, "10.0.0.1", "d")


def test_an_absent_front_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FrontError, match=r"did not answer dispatcher\.list"):
        rpc_call(tmp_path / "nobody.sock", "dispatcher.list", timeout_s=0.2)


def test_targets() -> None:
    assert matches("127.0.0.2:5061", "127.0.0.2") and matches("127.0.0.2:5061", "127.0.0.2:5061")
    assert not matches("127.0.0.2:5061", "127.0.0.2:5062") and not matches("127.0.0.20:5061", "127.0.0.2")
    assert matches("[::1]:7000", "::1") and matches("[::1]:7000", "all")


# -- Kamailio missing -------------------------------------------------------------------------------------------------


def test_serve_without_kamailio_says_how_to_install_it_and_starts_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setattr(front.shutil, "which", lambda name: None)
    monkeypatch.setattr(front, "_SEARCH_PATH", (str(tmp_path),))
    started: list[Any] = []
    monkeypatch.setattr(pool.asyncio, "run", lambda *a, **k: started.append(a))
    dialplans = Path(front.__file__).resolve().parents[2] / "dialplans"
    rc = pool.main(["--front", "kamailio", "--sip-port", "5060", "--workers", "2", "--dialplans", str(dialplans)])
    assert rc == 2
    assert "apt-get install kamailio" in capsys.readouterr().err
    assert started == []  # no worker, no front, no HTTP server


def test_kamailio_is_found_where_debian_puts_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    binary = tmp_path / "kamailio"
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    monkeypatch.setattr(front.shutil, "which", lambda name: None)
    monkeypatch.setattr(front, "_SEARCH_PATH", (str(tmp_path / "absent"), str(tmp_path)))
    assert front.kamailio_binary() == str(binary)
    assert os.access(front.require_kamailio(), os.X_OK)


# -- digest auth behind the front ----------------------------------------------------------------------------------


def test_every_worker_of_a_node_gets_the_same_nonce_key() -> None:
    settings = Settings(sip_auth_users={"trunk": "pw"}, front="kamailio", workers=3)
    node = pool.Pool(settings)
    secret = node.settings.sip_auth_nonce_secret
    assert secret is not None and len(secret.get_secret_value()) == 64
    sent = json.loads(pool.worker_settings_json(node.settings))["settings"]
    assert sent["sip_auth_nonce_secret"] == secret.get_secret_value()  # the workers' settings carry the key ...
    assert Settings.model_validate(sent).sip_auth_nonce_secret == secret
    assert secret.get_secret_value() not in json.dumps(node.settings.public())  # ... which is never logged
    # a configured key (shared by several nodes) is kept
    shared = pool.Pool(Settings(sip_auth_users={"trunk": "pw"}, sip_auth_nonce_secret="k" * 32))
    assert shared.settings.sip_auth_nonce_secret is not None
    assert shared.settings.sip_auth_nonce_secret.get_secret_value() == "k" * 32


# -- the edge ---------------------------------------------------------------------------------------------------------


def test_the_edges_files_hold_hashes_and_cidrs_never_a_password(tmp_path: Path) -> None:
    edge = front_edge.Edge(
        allowed_sources=("192.0.2.7/24", "2001:db8::/32"), auth_users={"trunk1": "pw:secret"}, auth_realm="t.example"
    )
    assert front_edge.address_file(edge.allowed_sources).splitlines()[1:] == ["1 192.0.2.0 24 0", "1 [2001:db8::] 32 0"]
    users = front_edge.front_users(edge, "nonce-key", "mask-key")
    assert "pw:secret" not in users and digest_ha1("trunk1", "t.example", "pw:secret") in users
    assert 'case "trunk1":' in users and 'modparam("auth", "secret", "nonce-key")' in users
    assert "topoh" not in users  # topology hiding off: its module is not loaded, so no parameter of it
    assert "pw:secret" not in repr(edge) and "pw:secret" not in edge.describe()
    front_files.write_private(tmp_path / "front.users", users)
    assert (tmp_path / "front.users").stat().st_mode & 0o777 == 0o600
    defs = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, edge=edge)
    assert "#!define FRONT_ALLOWLIST" in defs and "#!define FRONT_AUTH" in defs and "FRONT_TOPOH" not in defs


def test_an_open_front_says_so() -> None:
    words = front_edge.Edge().describe()
    assert "any source (no front_allowed_sources)" in words and "no authentication at the front" in words
    defs = front_defs(Listen("127.0.0.2", 5060), Path("/run/x"), retry_after_s=5)
    assert "FRONT_ALLOWLIST" not in defs and "#!define FRONT_AUTH\n" not in defs


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"front_auth": True}, "front_auth"),  # digest at the front without users
        ({"front_auth": True, "sip_auth_users": {'tr"unk': "pw"}}, "sip_auth_users"),
        ({"front_auth": True, "sip_auth_users": {"trunk": "pw"}, "sip_auth_realm": "a $realm"}, "sip_auth_realm"),
    ],
)
def test_what_the_routing_script_cannot_hold_is_refused_by_name(changes: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        front_edge.Edge.from_settings(Settings(**changes))


def test_a_bad_cidr_is_refused_when_the_settings_load() -> None:
    with pytest.raises(ValueError, match="front_allowed_sources"):
        Settings(front_allowed_sources=("10.0.0.0/8", "not-a-net"))


def test_kamailios_counters_become_prometheus_counters_that_only_grow() -> None:
    from prometheus_client import REGISTRY

    def bans() -> float:
        return REGISTRY.get_sample_value("callbridge_front_bans_total") or 0.0

    counts = front_rpc.edge_counts({"front": {"bans": 2, "refused_dialog": 3, "other": 9}})
    assert counts["bans"] == 2 and counts["refused_dialog"] == 3 and counts["full"] == 0
    export, start = front_rpc.EdgeExport(), bans()
    export.update(counts)
    export.update(counts)  # read again: nothing new
    assert bans() == start + 2
    export.update({**counts, "bans": 1})  # Kamailio restarted: its one ban is new
    assert bans() == start + 3


def test_dialogs_in_redis_go_to_a_database_of_their_own_with_the_redis_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(front_dialogs, "has_db_redis", lambda: True)
    settings = Settings(redis_url="redis://:pw@10.0.0.20:6380/0", front_dialog_db=5, front_dialog_id=3)
    url = front_dialogs.dialog_db_url(settings)
    assert url == "redis://:pw@10.0.0.20:6380/5"
    text = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, dialog_db=url, dialog_id=3)
    assert f'#!substdef "!FRONT_DIALOG_DB_URL!{url}!g"' in text
    assert f'#!substdef "!FRONT_DIALOG_SCHEMA!{tmp_path / "db_redis"}!g"' in text
    assert "#!define FRONT_DIALOG_DB\n" in text and "#!define FRONT_DIALOG_ID 3\n" in text
    assert front_dialogs.dialog_db_url(Settings(redis_url="redis://10.0.0.20/0", front_dialogs="memory")) == ""
    assert "FRONT_DIALOG_DB" not in front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5)
    front_dialogs.write_dialog_schemas(tmp_path / "db_redis")
    assert (tmp_path / "db_redis" / "dialog_vars").read_text().splitlines()[1] == "1"
    monkeypatch.setattr(front_dialogs, "has_db_redis", lambda: False)
    with pytest.raises(front_files.FrontError, match="kamailio-redis-modules"):
        front_dialogs.dialog_db_url(settings)  # asked for: an error
    missing = front_dialogs.dialog_store(Settings(redis_url="redis://10.0.0.20/0"))  # by default: memory, and why
    assert (missing.where, missing.why) == ("memory", "Kamailio's db_redis is not installed (apt-get install "
                                                      "kamailio-redis-modules)")  # fmt: skip


def test_the_fronts_dialogs_go_to_redis_by_default_or_say_why_they_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(front_dialogs, "has_db_redis", lambda: True)
    plain = front_dialogs.dialog_store(Settings(redis_url="redis://:pw@10.0.0.20:6380/0"))
    assert (plain.url, plain.db, plain.where) == ("redis://:pw@10.0.0.20:6380/15", 15, "redis")
    assert plain.describe() == "dialogs in Redis (the Redis of redis_url, database 15)"
    assert front_dialogs.dialog_store(Settings(redis_url="redis://10.0.0.20/15")).db == 14  # never redis_url's own
    sentinel = "redis+sentinel://10.0.0.5:26379/callbridge"
    held = front_dialogs.dialog_store(Settings(redis_url=sentinel))
    assert held.where == "memory" and "not redis_url's redis+sentinel://" in held.why and "front_dialog_url" in held.why
    assert held.to_json() == {"store": "memory", "why": held.why}
    assert "a restarted front forgets its live calls" in held.describe()
    named = front_dialogs.dialog_store(Settings(redis_url=sentinel, front_dialog_url="redis://:d@10.0.0.9:6379/3"))
    assert (named.url, named.why) == ("redis://:d@10.0.0.9:6379/3", "front_dialog_url")
    assert front_dialogs.dialog_store(Settings()).why == "no redis_url"
    assert (
        front_dialogs.dialog_store(Settings(redis_url="redis://10.0.0.20/0", front_dialogs="memory")).where == "memory"
    )
    with pytest.raises(ValueError, match="front_dialog_url"):
        Settings(front_dialog_url="rediss://10.0.0.9:6379")


@pytest.mark.parametrize(
    ("redis_url", "words"),
    [
        (None, "set redis_url"),
        ("redis+sentinel://10.0.0.5:26379/callbridge", "redis://host:port only"),
        ("unix:///run/redis.sock", "redis://host:port only"),
        ("redis://10.0.0.20:6379/5", "redis_url's own database"),
    ],
)
def test_front_dialog_db_needs_a_redis_url_db_redis_reaches(redis_url: str | None, words: str) -> None:
    with pytest.raises(ValueError, match="front_dialog_db") as caught:
        Settings(redis_url=redis_url, front_dialog_db=5)
    assert words in str(caught.value)


def test_the_front_names_no_product_unless_told_and_bans_after_refusals(tmp_path: Path) -> None:
    plain = front_defs(Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5)
    assert "FRONT_SERVER" not in plain and '#!substdef "!FRONT_REFUSALS!10!g"' in plain
    named = front_defs(
        Listen("127.0.0.2", 5060), tmp_path, retry_after_s=5, edge=Edge(server_header="lab", refusal_limit=3)
    )
    assert "#!define FRONT_SERVER_HEADER" in named and '#!substdef "!FRONT_SERVER_NAME!lab!g"' in named
    assert '#!substdef "!FRONT_REFUSALS!3!g"' in named


def test_an_allow_list_bans_after_three_refusals_unless_told_otherwise() -> None:
    allowed = ("10.0.0.0/24",)
    assert Edge.from_settings(Settings()).refusal_limit == 10
    assert Edge.from_settings(Settings(front_allowed_sources=allowed)).refusal_limit == 3
    assert Edge.from_settings(Settings(front_allowed_sources=allowed, front_refusal_limit=7)).refusal_limit == 7
    assert "or 3 refusals" in Edge.from_settings(Settings(front_allowed_sources=allowed)).describe()


def test_kamailios_log_lines_are_written_escaped_cut_and_masked() -> None:
    message = "invalid header name for [NoColon\r\n2026-11-26 INFO forged\r\nFrom: <sip:+15551234567@h>]" + "x" * 500
    raw = json.dumps(
        {"idx": 8, "pid": 42, "level": "ERROR", "module": "core", "file": "core/parser/parse_hname2.c", "line": 270,
         "function": "parse_sip_header_name", "logprefix": "", "message": message}
    ).encode() + b"\n"  # fmt: skip
    line = front_process.kamailio_log_line(raw)
    assert line.startswith(" 8(42) ERROR: <core> [core/parser/parse_hname2.c:270]: parse_sip_header_name(): ")
    assert "\n" not in line and r"NoColon\r\n2026-11-26 INFO forged\r\nFrom: <sip:+*******4567@h>]" in line
    assert line.endswith(" chars cut]") and len(line) < front_process.LOG_LINE_CHARS + 120
    assert (
        front_process.kamailio_log_line(b"Listening on \x1b[0m\n") == r"Listening on \x1b[0m"
    )  # not JSON: escaped whole
    assert front_process.kamailio_log_line(b"{not json\n") == "{not json"


async def test_the_relay_writes_every_line_and_skips_an_overlong_one(tmp_path: Path) -> None:
    import asyncio
    import io

    stream = asyncio.StreamReader(limit=64)
    stream.feed_data(b'{"level": "INFO", "message": "a"}\n' + b"y" * 200 + b"\nlast")
    stream.feed_eof()
    out = io.BytesIO()
    await front_process.relay_log(stream, out)
    lines = out.getvalue().decode().splitlines()
    assert lines[0].endswith("(): a") and "skipped" in lines[1] and lines[-1] == "last"


def test_calls_per_source_are_limited_by_default_and_zero_turns_the_limit_off(tmp_path: Path) -> None:
    on = Edge.from_settings(Settings())
    assert on.calls_per_source == 2 and "each source holds at most 2 calls (486 beyond)" in on.describe()
    assert "#!define FRONT_CALLS_PER_SOURCE 2\n" in front_defs(Listen("127.0.0.2", 5060), tmp_path, 5, edge=on)
    off = Edge.from_settings(Settings(front_calls_per_source=0))
    assert "FRONT_CALLS_PER_SOURCE" not in front_defs(Listen("127.0.0.2", 5060), tmp_path, 5, edge=off)
    assert "no limit of calls per source" in off.describe()
