"""The systemd units, read as systemd reads them: the service user is created as documented (the sysusers.d
snippet), every place ``serve`` writes by default is a directory the unit makes for that user (nothing under
``$HOME``, which ``ProtectHome=yes`` hides), and Kamailio's log goes to the journal."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.serve import front_process

ROOT = Path(__file__).resolve().parents[3]
SYSTEMD = ROOT / "deploy" / "systemd"
# systemd's directory settings -> the directory each name is made under
BASES = {
    "StateDirectory": "/var/lib",
    "LogsDirectory": "/var/log",
    "CacheDirectory": "/var/cache",
    "RuntimeDirectory": "/run",
}


def unit(name: str) -> dict[str, list[str]]:
    """Each key of the unit's sections -> its values in order (a key may repeat); comments left out."""
    found: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def writable(service: dict[str, list[str]]) -> list[Path]:
    """The directories the unit creates for its user: ``StateDirectory=a a/b`` -> /var/lib/a, /var/lib/a/b, ..."""
    return [Path(BASES[key]) / d for key in BASES for value in service.get(key, []) for d in value.split()]


def defaults_under(service: dict[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings' defaults in the unit's environment (no file, no variables of its own)."""
    for var in [v for v in os.environ if v.startswith("CALLBRIDGE_") or v.startswith("XDG_")]:
        monkeypatch.delenv(var)
    for entry in service.get("Environment", []):
        key, _, value = entry.partition("=")
        if not value.startswith("%"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("HOME", "/nonexistent-home")  # ProtectHome=yes: nothing may fall back to it
    return Settings()


def test_the_service_user_is_created_as_the_unit_names_it() -> None:
    service = unit("callbridge.service")
    (user,), (group,) = service["User"], service["Group"]
    lines = [shlex.split(line) for line in (SYSTEMD / "callbridge.sysusers").read_text().splitlines()]
    users = {fields[1]: fields for fields in lines if fields and not fields[0].startswith("#")}
    assert user == group == "callbridge" and users[user][0] == "u"  # `u` makes the user and its group
    home = Path(users[user][4])
    assert home in writable(service) and service["WorkingDirectory"] == [str(home)]
    assert users[user][5] == "/usr/sbin/nologin"
    header = (SYSTEMD / "callbridge.service").read_text()
    assert "callbridge.sysusers /etc/sysusers.d/callbridge.conf && systemd-sysusers" in header
    assert "useradd --system --home-dir /var/lib/callbridge --shell /usr/sbin/nologin callbridge" in header


def test_every_default_place_serve_writes_is_a_directory_the_unit_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    service = unit("callbridge.service")
    assert service["ProtectSystem"] == ["strict"] and service["ProtectHome"] == ["yes"]
    settings = defaults_under(service, monkeypatch)
    dirs = writable(service)
    assert settings.spool_dir == Path("/var/lib/callbridge/spool") and settings.spool_dir in dirs
    assert settings.recordings_dir == Path("/var/lib/callbridge/recordings") and settings.recordings_dir in dirs
    assert Path("/var/log/callbridge") in dirs  # report_file goes here
    cache = dict(e.split("=", 1) for e in service["Environment"])["CALLBRIDGE_CACHE"]
    assert Path(cache) in dirs
    front_dir = Path(service["ExecStart"][0].split("--front-dir ")[1].split()[0])
    assert any(front_dir.is_relative_to(d) for d in dirs)
    assert service["StateDirectoryMode"] == ["0700"]  # recordings and call state: this user only


def test_the_fronts_kamailio_logs_to_the_journal() -> None:
    front = unit("callbridge-front.service")
    argv = shlex.split(front["ExecStart"][0])
    assert "-E" in argv and "-DD" in argv  # stderr, in the foreground
    assert argv[1] == front_process.LOG_ENGINE  # one JSON object a line: a quoted packet's newlines escaped
    assert front["StandardError"] == ["journal"] and front["StandardOutput"] == ["journal"]
    assert front["SyslogIdentifier"] == ["callbridge-front"]
    assert not [a for a in argv if a.endswith(".log")]
