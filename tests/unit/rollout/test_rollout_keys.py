"""``rollout_key`` is a list of keys (``new,old``): each from the variable, its file or the settings file, each at
least 16 characters (an error names the setting and its source, never the key); one accessor gives them, the
signing key first; workers get the same list. ``serve``'s start-up lines and ``/healthz`` say whether rollout
records are signed, and none of them, nor what is logged or shown of the settings, holds a key."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bridge import config
from bridge.config import Settings, load_settings, load_settings_with_sources
from bridge.errors import ConfigError
from bridge.serve import pool
from bridge.supervisor.http import SUPERVISOR
from bridge.supervisor.monitoring import add_routes

NEW = "new-rollout-key-5f0e8c1d2b3a4f60"
OLD = "old-rollout-key-9a8b7c6d5e4f3a21"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    others = set(config.ENV.values())
    for var in list(os.environ):
        if var.startswith("CALLBRIDGE_") or var.removesuffix("_FILE") in others:
            monkeypatch.delenv(var)
    return monkeypatch


def test_a_list_of_keys_from_every_source_the_first_signs(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CALLBRIDGE_ROLLOUT_KEY", f"{NEW}, {OLD}")
    assert load_settings().rollout_keys == (NEW.encode(), OLD.encode())
    clean_env.delenv("CALLBRIDGE_ROLLOUT_KEY")

    key_file = tmp_path / "rollout_key"  # one a line, or new,old on one line: both read alike
    for text in (f"{NEW}\n{OLD}\n", f"{NEW},{OLD}\n"):
        key_file.write_text(text)
        clean_env.setenv("CALLBRIDGE_ROLLOUT_KEY_FILE", str(key_file))
        settings, origin = load_settings_with_sources()
        assert settings.rollout_keys == (NEW.encode(), OLD.encode()), text
        assert origin["rollout_key"] == "variable CALLBRIDGE_ROLLOUT_KEY_FILE"
    clean_env.delenv("CALLBRIDGE_ROLLOUT_KEY_FILE")

    yaml_file = tmp_path / "serve.yaml"
    yaml_file.write_text(f"rollout_key: [{NEW}, {OLD}]\n")
    assert load_settings(yaml_file).rollout_keys == (NEW.encode(), OLD.encode())
    assert Settings(rollout_key=NEW).rollout_keys == (NEW.encode(),)
    assert Settings(rollout_key=f"{NEW},{NEW},").rollout_keys == (NEW.encode(),)  # a repeat and a trailing comma
    assert Settings().rollout_keys == ()  # none: nothing is signed


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("short-key", "the key is shorter than 16 characters"),
        (f"{NEW},too-short", "key 2 of 2 is shorter than 16 characters"),
        (" , ", "no key"),
    ],
)
def test_a_short_key_is_an_error_naming_the_setting_and_its_source_never_the_key(
    clean_env: pytest.MonkeyPatch, text: str, says: str
) -> None:
    clean_env.setenv("CALLBRIDGE_ROLLOUT_KEY", text)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (caught.value.source, caught.value.field) == ("variable CALLBRIDGE_ROLLOUT_KEY", "rollout_key")
    assert says in caught.value.message
    assert "too-short" not in str(caught.value) and "short-key" not in str(caught.value)


def test_no_key_is_shown_logged_or_left_in_the_environment_and_workers_get_the_list(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = Settings(rollout_key=f"{NEW},{OLD}")
    for shown in (repr(settings), json.dumps(settings.public()), json.dumps(config.masked(settings))):
        assert NEW not in shown and OLD not in shown
    assert config.masked(settings)["rollout_key"] == "***"
    sent = json.loads(pool.worker_settings_json(settings))["settings"]  # through the worker's pipe
    assert Settings(**sent).rollout_keys == settings.rollout_keys
    blanked = pool._secret_values(settings, pool.ConsoleTokens(None, None))
    assert {NEW, OLD, f"{NEW},{OLD}"} <= set(blanked)  # each key alone, and the list, wherever they stand
    for line in pool.rollout_key_lines(settings):
        assert NEW not in line and OLD not in line
    assert "any of its 2 keys (changes signed with the first)" in pool.rollout_key_lines(settings)[0]
    assert "outcome records are unsigned" in pool.rollout_key_lines(Settings())[1]


class _Supervisor:
    redis = None

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def health(self) -> dict[str, Any]:
        return self.state


async def _healthz(settings: Settings) -> tuple[dict[str, Any], str]:
    state = pool.Pool(settings).health()
    app = web.Application()
    app[SUPERVISOR] = _Supervisor(state)  # type: ignore[assignment]
    add_routes(app, metrics=False, health_detail="open")  # the detail, as an open node shows it
    async with TestClient(TestServer(app)) as client:
        answer = await client.get("/healthz")
        text = await answer.text()
    return json.loads(text), text


async def test_healthz_says_whether_rollout_records_are_signed_never_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    body, _ = await _healthz(Settings(workers=1))
    assert (body["rollout_records"], body["rollout_keys"]) == ("unsigned", 0)
    body, text = await _healthz(Settings(workers=1, rollout_key=f"{NEW},{OLD}"))
    assert (body["rollout_records"], body["rollout_keys"]) == ("signed", 2)
    assert NEW not in text and OLD not in text
    assert not [r for r in caplog.records if NEW in r.getMessage() or OLD in r.getMessage()]
