"""Settings the twelve-factor way: every field from ``CALLBRIDGE_<FIELD>``, secrets also from ``<VARIABLE>_FILE``,
every bad value reported at once with its source, and ``config show`` with sources and masked secrets."""

from __future__ import annotations

import json
import os
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from bridge import config
from bridge.config import Settings, load_settings, load_settings_with_sources, secret_from_env
from bridge.errors import ConfigError, ConfigErrors
from bridge.realtime.credentials import BROKER_TOKEN_ENV

# Values a generic rule cannot guess (the field's validator wants a form); the rest come from the field's type.
SAMPLES: dict[str, tuple[str, Any]] = {
    "sip_host": ("10.1.2.3", "10.1.2.3"),
    "realtime_url": ("wss://realtime.example.net/v1/realtime", "wss://realtime.example.net/v1"),
    "front_dialog_url": ("redis://:pw@10.0.0.9:6379/3", "redis://:pw@10.0.0.9:6379/3"),
    "redis_url": ("redis://:pw@redis.example.net:6380/2", "redis://:pw@redis.example.net:6380/2"),
    "front_peers": ('["10.0.0.7:5062/4", "10.0.0.8:5062"]', ("10.0.0.7:5062/4", "10.0.0.8:5062")),
    "sip_session_min_se_s": ("120", 120),
    "front_dialog_db": ("5", 5),  # not redis_url's own database
    "rollout_key": ("rollout-key-0123456789", "rollout-key-0123456789"),  # 16 characters at least
    "http_cors_origins": ("https://crm.example.com, *", ("https://crm.example.com", "*")),
    "tracing_ui_url": ("https://tempo.example.com/trace/{trace_id}", "https://tempo.example.com/trace/{trace_id}"),
}
# Fields that are valid only together with another: the walk sets the companion too.
COMPANIONS: dict[str, str] = {
    "http_tls_cert": "http_tls_key",
    "http_tls_key": "http_tls_cert",
    "front_dialog_db": "redis_url",
}


def _bounds(field: FieldInfo) -> tuple[float, float]:
    low, high = -1e9, 1e9
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge | annotated_types.Gt):
            low = float(item.ge if isinstance(item, annotated_types.Ge) else item.gt)  # type: ignore[arg-type]  # numbers
        if isinstance(item, annotated_types.Le | annotated_types.Lt):
            high = float(item.le if isinstance(item, annotated_types.Le) else item.lt)  # type: ignore[arg-type]  # numbers
    return low, high


def _sample(name: str, field: FieldInfo) -> tuple[str, Any]:
    """A valid value other than the default, as the variable's text and as the field then holds it."""
    if name in SAMPLES:
        return SAMPLES[name]
    union = typing.get_origin(field.annotation) in (types.UnionType, typing.Union)
    kind = next(k for k in typing.get_args(field.annotation) if k is not type(None)) if union else field.annotation
    origin = typing.get_origin(kind)
    default = field.get_default(call_default_factory=True)
    if kind is bool:
        return ("false", False) if default else ("true", True)
    if origin is typing.Literal:
        choice = next(c for c in typing.get_args(kind) if c != default)
        return str(choice), choice
    if kind is int or kind is float:
        low, high = _bounds(field)
        value = int(min(max(low + 2, (default or 0) + 1), high - 0 if high < 1e9 else 1e6))
        assert value != default
        return str(value), kind(value)
    if kind is SecretStr:
        return "s3cret-value", "s3cret-value"
    if kind is Path:
        return "/srv/callbridge/x", Path("/srv/callbridge/x")
    if origin is tuple:
        return "10.0.0.0/8, 192.168.0.0/16", ("10.0.0.0/8", "192.168.0.0/16")
    if origin is dict:
        return '{"trunk1": "pw1"}', {"trunk1": "pw1"}
    if kind is str:
        return "sample", "sample"
    raise AssertionError(f"{name}: no sample for {kind!r}; add one to SAMPLES")


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    others = set(config.ENV.values())
    for var in list(os.environ):
        if var.startswith("CALLBRIDGE_") or var.removesuffix("_FILE") in others:
            monkeypatch.delenv(var)
    return monkeypatch


def test_every_field_is_settable_from_its_variable(clean_env: pytest.MonkeyPatch) -> None:
    walked = []
    for name, field in Settings.model_fields.items():
        text, expected = _sample(name, field)
        var = f"CALLBRIDGE_{name.upper()}"
        clean_env.setenv(var, text)
        if (companion := COMPANIONS.get(name)) is not None:
            clean_env.setenv(f"CALLBRIDGE_{companion.upper()}", _sample(companion, Settings.model_fields[companion])[0])
        settings, sources = load_settings_with_sources()
        clean_env.delenv(var)
        if companion is not None:
            clean_env.delenv(f"CALLBRIDGE_{companion.upper()}")
        assert _plain(getattr(settings, name)) == expected, name
        assert sources[name] == f"variable {var}"
        walked.append(name)
    assert walked == list(Settings.model_fields)


def test_two_bad_values_give_two_errors_naming_their_variables(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CALLBRIDGE_WORKERS", "many")
    clean_env.setenv("CALLBRIDGE_SIP_PORT", "70000")
    with pytest.raises(ConfigErrors) as caught:
        load_settings()
    found = {(e.source, e.field) for e in caught.value.errors}
    assert found == {("variable CALLBRIDGE_WORKERS", "workers"), ("variable CALLBRIDGE_SIP_PORT", "sip_port")}
    assert "CALLBRIDGE_WORKERS" in str(caught.value) and "CALLBRIDGE_SIP_PORT" in str(caught.value)


def test_each_error_names_its_source(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("media_beat_frames: 9\nworkers: 0\n")
    clean_env.setenv("CALLBRIDGE_RTP_PORT", "-1")
    with pytest.raises(ConfigErrors) as caught:
        load_settings(path, http_port=70000)
    assert {(e.source, e.field) for e in caught.value.errors} == {
        (f"file {path}", "media_beat_frames"),
        (f"file {path}", "workers"),
        ("variable CALLBRIDGE_RTP_PORT", "rtp_port"),
        ("flag --http-port", "http_port"),
    }


def test_file_then_environment_then_flags(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("workers: 2\nsip_port: 5100\nhttp_port: 8000\n")
    clean_env.setenv("CALLBRIDGE_SIP_PORT", "5200")
    clean_env.setenv("CALLBRIDGE_HTTP_PORT", "8100")
    settings, sources = load_settings_with_sources(path, http_port=8200)
    assert (settings.workers, settings.sip_port, settings.http_port) == (2, 5200, 8200)
    assert sources == {
        "workers": f"file {path}",
        "sip_port": "variable CALLBRIDGE_SIP_PORT",
        "http_port": "flag --http-port",
    }


def test_secrets_from_files(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    key, users, url = tmp_path / "key", tmp_path / "users", tmp_path / "redis"
    key.write_text("sk-from-a-file\n")
    users.write_text("trunk1: pw1\ntrunk2: pw2\n")
    url.write_text("redis://:pw@10.0.0.9:6379/0\n")
    clean_env.setenv("OPENAI_API_KEY_FILE", str(key))
    clean_env.setenv("CALLBRIDGE_SIP_AUTH_USERS_FILE", str(users))
    clean_env.setenv("REDIS_URL_FILE", str(url))
    settings, sources = load_settings_with_sources()
    assert settings.credential == "sk-from-a-file"
    assert settings.realtime_url == config.OPENAI_URL  # a key and no URL: the service
    assert _plain(settings.sip_auth_users) == {"trunk1": "pw1", "trunk2": "pw2"}
    assert settings.redis_url == "redis://:pw@10.0.0.9:6379/0"
    assert sources["api_key"] == "variable OPENAI_API_KEY_FILE"
    assert "sk-from-a-file" not in repr(settings) and "pw1" not in json.dumps(config.masked(settings))
    assert "pw@" not in json.dumps(config.masked(settings))

    clean_env.setenv("CALLBRIDGE_SUPERVISOR_TOKEN_FILE", str(key))
    assert secret_from_env("CALLBRIDGE_SUPERVISOR_TOKEN") == "sk-from-a-file"
    clean_env.setenv("CALLBRIDGE_SUPERVISOR_TOKEN", "also-here")
    with pytest.raises(ConfigError, match="not both"):
        secret_from_env("CALLBRIDGE_SUPERVISOR_TOKEN")
    clean_env.setenv("CALLBRIDGE_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert (caught.value.source, caught.value.field) == ("variable CALLBRIDGE_API_KEY_FILE", "api_key")


def test_each_value_knows_its_origin(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text("workers: 2\nsip_auth_users: {alice: from-file, bob: from-file}\n")
    (tmp_path / "key").write_text("sk-from-a-file\n")
    clean_env.setenv("CALLBRIDGE_SIP_AUTH_USERS__carol", "from-env")
    clean_env.setenv("OPENAI_API_KEY_FILE", str(tmp_path / "key"))
    settings = load_settings(path, sip_port=5070)
    assert settings.origin("workers") == f"file {path}"
    assert settings.origin("sip_port") == "flag --sip-port"
    assert settings.origin("api_key") == "variable OPENAI_API_KEY_FILE"
    assert settings.origin("sip_auth_users") == "variable CALLBRIDGE_SIP_AUTH_USERS__*"
    assert list(settings.sip_auth_users) == ["carol"]  # the stronger source's mapping, whole: not merged
    assert settings.origin("realtime_url") == "default" and settings.realtime_url == config.OPENAI_URL
    assert settings.origin("rtp_port") == "default"
    with pytest.raises(KeyError):
        settings.origin("no_such_field")


def test_settings_built_directly_read_only_their_arguments(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CALLBRIDGE_WORKERS", "7")
    settings = Settings(sip_port=5070)
    assert (
        settings.workers == 1 and settings.origin("sip_port") == "argument" and settings.origin("workers") == "default"
    )
    assert load_settings().workers == 7 and Settings().workers == 1  # and the pipeline is gone once built


def test_one_secret_reader_names_the_file_and_the_setting_never_the_value(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("tok-9f2c\n")
    assert config.Secret("X_TOKEN").read({"X_TOKEN_FILE": str(token)}) == "tok-9f2c"
    assert config.Secret("X_TOKEN").read({"X_TOKEN": "direct"}) == "direct"
    assert config.Secret("X_TOKEN").read({}) is None
    with pytest.raises(ConfigError) as caught:
        config.Secret("X_TOKEN", "header Authorization").read({"X_TOKEN_FILE": str(tmp_path / "gone")})
    assert (caught.value.source, caught.value.field) == ("variable X_TOKEN_FILE", "header Authorization")
    assert str(tmp_path / "gone") in caught.value.message and "X_TOKEN_FILE" in caught.value.message
    with pytest.raises(ConfigError) as caught:
        config.Secret("X_TOKEN").read({"X_TOKEN": "tok-9f2c", "X_TOKEN_FILE": str(token)})
    assert "tok-9f2c" not in str(caught.value) and caught.value.message == "set X_TOKEN or X_TOKEN_FILE, not both"


def test_one_list_of_secret_variables() -> None:
    secret = ["OPENAI_API_KEY", "REDIS_URL_FILE", "CALLBRIDGE_SIP_AUTH_USERS__trunk", "CALLBRIDGE_SIP_NONCE_SECRET"]
    secret += [config.SUPERVISOR_TOKEN_ENV, BROKER_TOKEN_ENV]
    env = dict.fromkeys([*secret, "CALLBRIDGE_WORKERS", "HOME"], "x")
    assert config.secret_variables(env) == set(env) - {"CALLBRIDGE_WORKERS", "HOME"}


def test_workers_get_secrets_in_their_settings_not_their_environment(
    tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    from bridge.serve.pool import Pool, worker_settings_json

    (tmp_path / "key").write_text("sk-file-key")
    clean_env.setenv("CALLBRIDGE_API_KEY_FILE", str(tmp_path / "key"))
    clean_env.setenv("CALLBRIDGE_SIP_AUTH_NONCE_SECRET", "nonce-key")
    clean_env.setenv("CALLBRIDGE_SIP_AUTH_USERS__trunk1", "trunk-pw")
    settings = load_settings()
    env = Pool(settings)._worker_env()
    assert not {v for v in env if "API_KEY" in v or "NONCE" in v or "AUTH_USERS" in v}, sorted(env)
    assert not {"sk-file-key", "nonce-key", "trunk-pw"} & set(env.values())
    sent = json.loads(worker_settings_json(settings))["settings"]  # what the worker reads from its pipe
    assert (sent["api_key"], sent["sip_auth_nonce_secret"], sent["sip_auth_users"]) == (
        "sk-file-key", "nonce-key", {"trunk1": "trunk-pw"},
    )  # fmt: skip
    assert "api_key" not in json.loads(worker_settings_json(settings, "broker-token"))["settings"]  # broker mode


def test_config_show_names_sources_and_masks_secrets(
    clean_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from bridge.cli import main

    clean_env.setenv("CALLBRIDGE_WORKERS", "3")
    clean_env.setenv("OPENAI_API_KEY", "sk-shown-nowhere")
    clean_env.setenv("CALLBRIDGE_SIP_AUTH_USERS__trunk1", "pw-shown-nowhere")
    assert main(["config", "show", "--http-port", "8080", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    assert shown["workers"] == {"value": 3, "source": "variable CALLBRIDGE_WORKERS"}
    assert shown["http_port"] == {"value": 8080, "source": "flag --http-port"}
    assert shown["api_key"] == {"value": "***", "source": "variable OPENAI_API_KEY"}
    assert shown["sip_auth_users"]["value"] == {"trunk1": "***"}
    assert shown["sip_host"]["source"] == "default"
    assert "shown-nowhere" not in out
    clean_env.setenv("CALLBRIDGE_WORKERS", "0")
    assert main(["config", "show"]) == 2
    assert "variable CALLBRIDGE_WORKERS: workers" in capsys.readouterr().err
