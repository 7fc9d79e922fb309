"""What a CRM gets and may get (issue 62, items 9 and 12), pure: the caller's full number only to an ``https://``
endpoint that asks for it (refused at load otherwise, naming the file and field; the settings' endpoint has its own
``webhook_caller``), and the ``call.ended`` of a call whose worker died, made from its hash in Redis, continuing its
chain and fitting the published schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bridge.config import load_settings
from bridge.dialplan import check_file
from bridge.errors import ConfigError
from bridge.webhooks.body import envelope
from bridge.webhooks.endpoints import DEFAULT, endpoints

SCHEMA = Draft202012Validator(
    json.loads((Path(__file__).resolve().parents[3] / "docs" / "webhooks.schema.json").read_text())
)
NUMBER = "+15551234567"


def test_a_plans_endpoint_gets_the_full_number_only_over_https_refused_naming_the_file_and_field(
    tmp_path: Path,
) -> None:
    plan = tmp_path / "crm.yaml"
    plan.write_text("name: crm\nmatch: ['1']\nwebhooks:\n"
                    "  - {url: 'https://ok.example/h', secret: {env: A}, caller: full}\n"
                    "  - {url: 'http://crm.example/h?token=abc', secret: {env: B}, caller: full}\n")  # fmt: skip
    (error,) = check_file(plan)
    assert (error.source, error.field) == (str(plan), "webhooks[1].caller")
    assert "only to an https:// URL" in error.message and "abc" not in error.message
    plan.write_text("name: crm\nmatch: ['1']\nwebhooks:\n  - {url: 'http://crm.example/h', secret: {env: B}}\n")
    assert check_file(plan) == []  # viewer (the last two digits) by default, over http too


def test_the_settings_endpoint_has_its_own_caller_setting_refused_over_http_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("CALLBRIDGE_WEBHOOK_URL", "CALLBRIDGE_WEBHOOK_CALLER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "serve.yaml"
    path.write_text("webhook_url: http://crm.example/h\nwebhook_caller: full\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert (caught.value.source, caught.value.field) == (f"file {path}", "webhook_caller")
    assert "only to an https:// URL" in caught.value.message
    path.write_text("webhook_url: https://crm.example/h\nwebhook_caller: full\n")
    settings = load_settings(path)
    assert endpoints(settings.webhook_url, [], settings.webhook_caller)[DEFAULT].caller == "full"
    assert endpoints("https://crm.example/h", [])[DEFAULT].caller == "viewer"  # the default, as before


class _Box:
    """An outbox that keeps what it is given."""

    def __init__(self) -> None:
        self.emitted: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def emit(self, event_type: str, data: dict[str, Any], **kw: Any) -> str:
        self.emitted.append((event_type, data, kw))
        return "msg_1"


def test_a_lost_calls_call_ended_comes_from_its_hash_and_continues_its_chain(tmp_path: Path) -> None:
    from bridge.serve.webhooks import lost_ended

    state = {"call_id": "c-1", "sip_call_id": "a84b@pbx", "dialplan": "support", "variant": "ga", "dialect": "ga",
             "model": "gpt-realtime", "voice": "alloy", "caller": "+*******4567", "called": "1000",
             "started_at": "1000.000", "answered_at": "1001.500", "webhook_seq": "2"}  # fmt: skip
    (tmp_path / "c-1").mkdir()
    box = _Box()
    assert lost_ended(box, "c-1", state, tmp_path, worker_exit="SIGKILL") == "msg_1"  # type: ignore[arg-type]
    ((kind, data, kw),) = box.emitted
    assert kind == "call.ended" and (kw["chain"], kw["seq"], data["seq"], kw["dialplan"]) == ("c-1", 3, 3, "support")
    assert kw["callers"] == {"viewer": "•" * 10 + "67", "masked": "+*******4567", "full": "+*******4567"}
    assert (data["end_reason"], data["ended_by"], data["outcome"], data["worker_exit"]) == (
        "worker died", "fault", "failed", "SIGKILL",
    )  # fmt: skip
    assert data["sip_call_id"] == "a84b@pbx" and data["recording"] == str(tmp_path / "c-1")
    assert data["answered_at"] == "1970-01-01T00:16:41.500Z" and data["duration_s"] > 0
    body = json.loads(envelope(kind, data | {"caller": kw["callers"]["viewer"]}, 1e9))
    assert [e.message for e in SCHEMA.iter_errors(body)] == []
    never = {k: v for k, v in state.items() if k not in ("answered_at", "webhook_seq")} | {"ended_at": "1002.000"}
    lost_ended(box, "c-2", never, tmp_path)  # type: ignore[arg-type]
    _, data, kw = box.emitted[-1]
    assert (kw["seq"], data["answered_at"], data["duration_s"], data["recording"]) == (1, None, 0.0, None)
    assert [e.message for e in SCHEMA.iter_errors(json.loads(envelope(kind, data | {"caller": "x"}, 1e9)))] == []
