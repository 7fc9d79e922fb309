"""The pure half of webhooks: the Standard Webhooks signature (the spec's own vector, and the reference verifier,
the ``standardwebhooks`` package), the body, the retry schedule, and which endpoint gets which event."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook, WebhookVerificationError

from bridge.dialplan import check_file, plan_warnings
from bridge.webhooks import schedule
from bridge.webhooks.body import ALL_EVENTS, EventType, call_ended_data, envelope, iso, transcript
from bridge.webhooks.endpoints import DEFAULT, WebhookSpec, endpoints, targets
from bridge.webhooks.signing import headers, new_id, new_secret, secret_bytes, sign

# The example of the Standard Webhooks specification (and of its reference libraries' tests)
SPEC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SPEC_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
SPEC_TIMESTAMP = 1614265330
SPEC_BODY = b'{"test": 2432232314}'
SPEC_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_signature_is_the_specs_example() -> None:
    assert sign(secret_bytes(SPEC_SECRET), SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY) == SPEC_SIGNATURE


def test_the_reference_verifier_takes_our_headers_and_refuses_a_changed_body() -> None:
    secret, body = new_secret(), envelope("call.ended", {"call_id": "c1", "text": "héllo"}, time.time())
    sent = headers(secret_bytes(secret), new_id(), body)
    assert Webhook(secret).verify(body, sent) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace(b"c1", b"c2"), sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, sent)
    assert set(sent) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type"}
    assert abs(int(sent["webhook-timestamp"]) - time.time()) < 5


@pytest.mark.parametrize(
    ("secret", "why"),
    [
        ("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "starts with whsec_"),
        ("whsec_not base64!", "not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "24 to 64 bytes"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "24 to 64 bytes"),
    ],
)
def test_a_bad_secret_says_what_is_wrong_and_never_quotes_it(secret: str, why: str) -> None:
    with pytest.raises(ValueError, match=why) as caught:
        secret_bytes(secret)
    assert secret.removeprefix("whsec_") not in str(caught.value)


def test_an_unpadded_secret_is_taken() -> None:
    assert secret_bytes(SPEC_SECRET.rstrip("=")) == base64.b64decode(SPEC_SECRET[6:])
    assert len(secret_bytes(new_secret())) == 32


def test_ids_are_new_and_shaped_like_the_specs() -> None:
    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100 and all(i.startswith("msg_") and len(i) == 30 for i in ids)


def test_the_body_is_type_timestamp_and_data() -> None:
    body = json.loads(envelope(EventType.CALL_STARTED, {"call_id": "c1"}, 1764117000.5))
    want = {"type": "call.started", "version": 1, "timestamp": "2025-11-26T00:30:00.500Z", "data": {"call_id": "c1"}}
    assert body == want
    assert iso(0) == "1970-01-01T00:00:00.000Z"


def _report() -> dict[str, Any]:
    return {
        "end_reason": "caller hung up (BYE)",
        "ended_by": "caller",
        "outcome": "completed",
        "transfer": None,
        "reports": [
            [10.0, {"kind": "answered"}],
            [850.5, {"kind": "agent_transcript", "text": "Hello, how can I help?", "item_id": "a"}],
            [2400.0, {"kind": "caller_transcript", "text": "Where is my order?", "item_id": "b"}],
            [3100.0, {"kind": "agent_transcript", "text": "Let me check.", "item_id": "c"}],
        ],
        "cost_usd": 0.0123,
        "usage": {"input_tokens": 100, "output_tokens": 50},
    }


def test_call_ended_has_what_a_crm_files() -> None:
    identity = {"call_id": "c1", "dialplan": "support", "variant": "ga", "caller": "******4567"}
    times = {"started_at": 1000.0, "answered_at": 1001.0, "ended_at": 1031.5}
    report = _report() | {
        "post_call": {"summary": "Asked about an order.", "disposition": "order_status", "fields": {"order": "A1"},
                      "status": "ok"},
        "checks": [{"name": "disclosure", "passed": True, "detail": ""}],
    }  # fmt: skip
    data = call_ended_data(identity, times, report, recording="/var/rec/c1")
    assert data["duration_s"] == 30.5
    assert (data["started_at"], data["ended_at"]) == ("1970-01-01T00:16:40.000Z", "1970-01-01T00:17:11.500Z")
    assert [t["speaker"] for t in data["transcript"]] == ["agent", "caller", "agent"]
    assert data["transcript"][1] == {"at_s": 2.4, "speaker": "caller", "text": "Where is my order?"}
    assert (data["summary"], data["disposition"], data["fields"]) == ("Asked about an order.", "order_status",
                                                                      {"order": "A1"})  # fmt: skip
    assert data["post_call_status"] == "ok" and data["checks"][0]["name"] == "disclosure"
    assert data["cost"] == {"usd": 0.0123, "input_tokens": 100, "output_tokens": 50}
    assert (data["end_reason"], data["ended_by"], data["outcome"], data["recording"]) == (
        "caller hung up (BYE)", "caller", "completed", "/var/rec/c1"
    )  # fmt: skip


def test_call_ended_without_post_call_or_answer_says_null() -> None:
    data = call_ended_data({"call_id": "c1"}, {"started_at": 5.0, "answered_at": None, "ended_at": 9.0}, {})
    assert data["duration_s"] == 0.0 and data["answered_at"] is None
    assert data["summary"] is None and data["disposition"] is None and data["fields"] is None
    assert data["checks"] is None and data["transcript"] == [] and data["recording"] is None


def test_transcript_keeps_only_words() -> None:
    assert transcript([(1.0, {"kind": "phase"}), (2.0, {"kind": "caller_transcript", "text": "hi"})]) == [
        {"at_s": 0.002, "speaker": "caller", "text": "hi"}
    ]


def test_the_schedule_retries_within_seconds_then_for_more_than_a_day() -> None:
    assert schedule.next_delay(0) == 0.0
    assert schedule.next_delay(1) == 5.0  # the first retry within seconds
    delays = [schedule.next_delay(n) for n in range(1, schedule.ATTEMPTS)]
    assert delays == list(schedule.RETRY_DELAYS_S) and delays == sorted(delays)
    assert schedule.next_delay(schedule.ATTEMPTS) is None  # then a dead letter
    assert 24 * 3600 < schedule.total_s() < 30 * 3600


@pytest.mark.parametrize(
    ("status", "error", "label", "ok"),
    [(200, "", "2xx", True), (204, "", "2xx", True), (302, "", "3xx", False), (410, "", "4xx", False),
     (503, "", "5xx", False), (None, "timeout", "timeout", False), (None, "error: X", "error", False)],
)  # fmt: skip
def test_only_a_2xx_is_delivered(status: int | None, error: str, label: str, ok: bool) -> None:
    assert schedule.status_class(status, error) == label
    assert (status is not None and schedule.delivered(status)) is ok


class _Plan:
    def __init__(self, name: str, webhooks: tuple[WebhookSpec, ...]) -> None:
        self.name, self.webhooks = name, webhooks


def test_each_endpoint_gets_the_events_it_asked_for() -> None:
    crm = WebhookSpec.model_validate({"url": "https://crm.example/hook", "secret": {"env": "CRM_SECRET"},
                                      "events": ["call.ended"], "name": "crm"})  # fmt: skip
    qa = WebhookSpec.model_validate({"url": "https://qa.example/hook", "secret": {"file": "/run/secrets/qa"}})
    found = endpoints("https://ops.example/all", [_Plan("support", (crm, qa)), _Plan("sales", ())])
    assert list(found) == [DEFAULT, "support.crm", "support.1"]
    assert [e.name for e in targets(found, "call.ended", "support")] == [DEFAULT, "support.crm", "support.1"]
    assert [e.name for e in targets(found, "call.started", "support")] == [DEFAULT, "support.1"]
    assert [e.name for e in targets(found, "call.ended", "sales")] == [DEFAULT]
    assert [e.name for e in targets(found, "rollout.decision", None)] == [DEFAULT]
    assert targets(endpoints(None, []), "call.ended", "support") == []
    assert qa.events == ALL_EVENTS and qa.caller == "viewer"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"url": "https://x.example", "secret": "whsec_literal"}, "never written in a dialplan"),
        ({"url": "https://x.example", "secret": {"env": "S"}, "events": ["call.nope"]}, "call.nope"),
        ({"url": "ftp://x.example", "secret": {"env": "S"}}, r"not an http\(s\) URL"),
        ({"url": "https://u:p@x.example", "secret": {"env": "S"}}, "credentials in the URL"),
        ({"url": "https://x.example", "secret": {"env": "S"}, "events": []}, "at least one"),
        ({"url": "https://x.example", "secret": {"env": "S"}, "caller": "raw"}, "viewer"),
    ],
)
def test_a_bad_webhook_entry_is_refused(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        WebhookSpec.model_validate(entry)


def test_dialplan_check_names_the_file_and_field_and_warns_of_an_unset_secret(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmatch: ['1']\nwebhooks:\n  - {url: 'https://x.example', secret: whsec_abc}\n")
    (error,) = check_file(bad)
    assert (error.source, error.field) == (str(bad), "webhooks[0]")
    assert "never written in a dialplan" in error.message
    twice = tmp_path / "twice.yaml"
    twice.write_text(
        "name: twice\nmatch: ['2']\nwebhooks:\n  - {url: 'https://a.example', secret: {env: A}, name: crm}\n"
        "  - {url: 'https://b.example', secret: {env: B}, name: crm}\n"
    )
    assert "names must be unique" in check_file(twice)[0].message
    good = tmp_path / "good.yaml"
    good.write_text("name: good\nmatch: ['3']\nwebhooks:\n  - {url: 'https://a.example', secret: {env: UNSET_X}}\n")
    assert check_file(good) == []
    from bridge.dialplan import load_dialplan

    (warning,) = plan_warnings(load_dialplan(good))
    assert warning.field == "webhooks[0].secret.env" and "UNSET_X" in warning.message


def test_the_caller_in_each_form_an_endpoint_may_ask_for() -> None:
    from bridge.serve.webhooks import callers

    shown = callers("+15551234567", 4)
    assert shown == {"viewer": "•" * 10 + "67", "masked": "+*******4567", "full": "+15551234567"}
    assert callers("sip:+15551234567@trunk", None)["masked"] == "sip:+15551234567@trunk"


def _settings(**values: Any) -> Any:
    from bridge.config import Settings

    return Settings(dialplans=Path(__file__).resolve().parents[3] / "dialplans", **values)


@pytest.mark.parametrize(
    ("values", "field", "says"),
    [
        ({"webhook_url": "https://crm.example/h"}, "redis_url", "kept in Redis"),
        ({"webhook_url": "https://crm.example/h", "redis_url": "redis://127.0.0.1:1"}, "webhook_secret", "signed"),
        ({"webhook_url": "ftp://crm.example", "redis_url": "redis://127.0.0.1:1"}, "webhook_url", "http(s)"),
        ({"webhook_url": "https://crm.example/h", "redis_url": "redis://127.0.0.1:1",
          "webhook_secret": "whsec_c2hvcnQ="}, "webhook_secret", "24 to 64 bytes"),
    ],
)  # fmt: skip
def test_serve_refuses_webhook_settings_it_cannot_use_naming_the_setting(
    values: dict[str, Any], field: str, says: str
) -> None:
    from bridge.errors import ConfigError
    from bridge.serve.webhooks import start_node

    with pytest.raises(ConfigError) as caught:
        start_node(_settings(**values))
    assert caught.value.field == field and says in caught.value.message
    assert "c2hvcnQ" not in str(caught.value)


def test_a_queued_delivery_is_sent_only_while_its_seal_holds() -> None:
    from bridge.webhooks.queue import Delivery
    from bridge.webhooks.signing import queue_key

    key = queue_key("a-listen-key")
    assert key is not None and queue_key(None) is None and queue_key("another") != key
    d = Delivery("msg_1", "default", "call.ended", '{"type":"call.ended"}', 1.0, chain="c-1", seq=2).sealed(key)
    assert d.refusal(key) is None
    again = Delivery.read(d.key, d.record())
    assert again.refusal(key) is None  # as Redis gives it back
    for changed in ({"body": '{"type":"call.ended","data":{}}'}, {"seq": 3}, {"endpoint": "other"}, {"seal": "é"}):
        forged = Delivery.read(d.key, d.record()[:-1] + "," + json.dumps(changed)[1:])
        assert "seal does not hold" in (forged.refusal(key) or ""), changed
    assert "seal does not hold" in (d.refusal(queue_key("another")) or "")  # another node's key
    for text in ("{not json", "[1]", '{"id": 1}', '{"id":"x","endpoint":"default","type":"call.ended","body":2}'):
        bad = Delivery.read("default|msg_9", text)
        assert bad.refusal(key) == "its record in Redis is not readable" and bad.id == "msg_9", text
