"""Secrets stay out of what is logged, shown and stored: one masking of every URL (its password and every query
parameter that names a secret) for logs and ``config show``, and a recording's header keeps its plan's settings
and version but no secret (tool and MCP headers, tokens in the orchestrator's URL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.call.recorder import recorded_plan
from bridge.config import Settings, load_settings, masked, otlp_headers, secret_variables
from bridge.dialplan import Dialplan
from bridge.privacy.masking import mask_url
from bridge.runtime import traces
from bridge.runtime.secrets import without_secrets
from bridge.serve import config_cli
from bridge.serve.pool import worker_settings_json

SECRETS = ("pw-1", "sent-2", "tok-3", "hdr-4", "orch-5")


def test_one_masking_for_every_url_in_logs_and_config_show() -> None:
    url = "redis+sentinel://:pw-1@s1:26379,s2:26379/mymaster?password=pw-1&sentinel_password=sent-2&db=2"
    shown = mask_url(url)
    assert "pw-1" not in shown and "sent-2" not in shown and "db=2" in shown and "s2:26379/mymaster" in shown
    assert mask_url("https://h/x?token=tok-3&lang=en") == "https://h/x?token=****&lang=en"
    settings = load_settings(None, redis_url=url)
    for view in (settings.public(), masked(settings)):
        text = json.dumps(view)
        assert not any(secret in text for secret in SECRETS), text
        assert "mymaster" in text  # the URL is still there, secrets masked


def test_a_recordings_header_keeps_the_plan_and_its_version_but_no_secret() -> None:
    plan = Dialplan.model_validate({
        "name": "cards", "match": ["9"],
        "http_tools": [{"name": "charge", "url": "https://pay.example/charge?key=tok-3",
                        "headers": {"Authorization": "Bearer hdr-4"}, "sensitive": True}],
        "mcp_servers": [{"name": "crm", "url": "https://crm.example/mcp", "headers": {"X-Key": "hdr-4"}}],
        "orchestrator": {"url": "https://orch.example/turn?access_token=orch-5"},
    })  # fmt: skip
    dump = plan.model_dump(mode="json", exclude={"source_file"})
    kept = recorded_plan(dump)
    text = json.dumps(kept)
    assert not any(secret in text for secret in SECRETS), text
    assert kept["name"] == "cards" and kept["http_tools"][0]["headers"] == {"Authorization": "****"}
    assert kept["orchestrator"]["url"] == "https://orch.example/turn?access_token=****"
    assert kept["version"] == recorded_plan(dump)["version"] != recorded_plan({**dump, "match": ["8"]})["version"]


OTLP_KEY = "otlp-api-key-7f3e9a"


def test_the_otlp_exporters_headers_reach_no_workers_environment_and_no_config_show(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``OTEL_EXPORTER_OTLP_HEADERS`` (an API key) is a secret: dropped from every child's environment, read once
    (the traces' own variable first, each also from a ``_FILE``) and sent to the workers through the settings pipe
    only when they trace; ``config show`` (text and JSON) never shows it."""
    headers = f"x-api-key={OTLP_KEY}"
    env = {"OTEL_EXPORTER_OTLP_HEADERS": headers, "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE": "/x", "PATH": "/bin"}
    assert secret_variables(env) == {"OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE"}
    assert without_secrets(env, secret_variables(env)) == {"PATH": "/bin"}
    assert otlp_headers({"OTEL_EXPORTER_OTLP_HEADERS": headers}) == headers
    (tmp_path / "h").write_text("x-api-key=traces-own\n")
    both = {"OTEL_EXPORTER_OTLP_HEADERS": headers, "OTEL_EXPORTER_OTLP_TRACES_HEADERS_FILE": str(tmp_path / "h")}
    assert otlp_headers(both) == "x-api-key=traces-own" and otlp_headers({}) is None
    traces.hold_headers(headers)
    try:
        sent = json.loads(worker_settings_json(Settings(tracing="otlp")))
        assert sent["otlp_headers"] == headers
        assert OTLP_KEY not in worker_settings_json(Settings())  # not tracing: not sent
    finally:
        traces.hold_headers(None)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", headers)
    assert json.loads(worker_settings_json(Settings(tracing="otlp")))["otlp_headers"] == headers  # none held: as told
    monkeypatch.setenv("CALLBRIDGE_TRACING", "otlp")
    for flags in ([], ["--json"]):
        assert config_cli.main(["show", *flags]) == 0
        out, err = capsys.readouterr()
        assert '"otlp"' in out and OTLP_KEY not in out + err
