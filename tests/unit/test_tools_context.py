"""The call context a tool gets (``bridge.tools.context``) and the plan's guards (``bridge.tools.guard``), pure: how
the caller's number is given, the signature (the ``standardwebhooks`` package's own signer agrees), the pins and
verifications, and ``dialplan check`` naming each bad field."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks.webhooks import Webhook

from bridge.dialplan import Dialplan, check_file
from bridge.tools.context import CallContext, SignedRequest, caller_form, context_key, sign, signed
from bridge.tools.guard import Guard, answer_fields, strip_pinned
from bridge.tools.http import http_request
from bridge.tools.spec import HttpTool, ToolOutcome

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
ORDER = {"type": "object", "required": ["order", "customer_id"],
         "properties": {"order": {"type": "string"}, "customer_id": {"type": "string"}}}  # fmt: skip


@pytest.mark.parametrize(
    ("setting", "url", "form"),
    [
        ("auto", "https://crm.example/x", "full"),
        ("auto", "http://127.0.0.1:8080/x", "full"),
        ("auto", "http://[::1]/x", "full"),
        ("auto", "http://localhost/x", "full"),
        ("auto", "http://crm.internal/x", "masked"),
        ("auto", "http://10.0.0.5/x", "masked"),
        ("full", "http://10.0.0.5/x", "full"),
        ("masked", "https://crm.example/x", "masked"),
    ],
)
def test_the_caller_is_given_in_full_only_where_the_setting_allows(setting: str, url: str, form: str) -> None:
    assert caller_form(setting, url) == form


def test_a_masked_caller_keeps_the_plans_visible_digits_or_four() -> None:
    assert CallContext(caller="+15551234567", caller_visible_digits=2).caller_as("masked") == "+*********67"
    assert CallContext(caller="+15551234567", caller_visible_digits=None).caller_as("masked") == "+*******4567"
    assert CallContext(caller="+15551234567").caller_as("full") == "+15551234567"


def test_the_signature_is_the_standard_webhooks_one() -> None:
    context = CallContext("call-1", "+15551234567", "4300", "orders")
    context.verify("verify_customer", {"customer_id": "C-123"})
    request = SignedRequest("GET", "https://crm.example/orders?order=A-1")
    headers = signed(context_key(SECRET), context.document("order_status", "full", 1_700_000_000, request))
    document = json.loads(headers["callbridge-context"])
    assert document == {
        "v": 1, "call_id": "call-1", "dialplan": "orders", "tool": "order_status", "called": "4300",
        "caller": "+15551234567", "caller_form": "full", "ts": 1_700_000_000,
        "verified": {"customer_id": "C-123", "tool": "verify_customer"},
        "request": {"method": "GET", "url": "https://crm.example/orders?order=A-1",
                    "sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
    }  # fmt: skip
    theirs = Webhook(SECRET).sign(
        headers["callbridge-context-id"], dt.datetime.fromtimestamp(1_700_000_000, dt.UTC),
        headers["callbridge-context"],
    )  # fmt: skip
    assert headers["callbridge-context-timestamp"] == "1700000000"
    assert headers["callbridge-context-signature"] == theirs
    assert sign(context_key(SECRET), "ctx_a", 1, "{}") != sign(context_key(SECRET), "ctx_b", 1, "{}")


def test_the_signature_covers_the_requests_method_url_and_arguments() -> None:
    """A context signed for one request does not verify as another's: each of method, URL and arguments changes the
    signed text (a server compares the context's ``request`` with the request it got)."""
    get = HttpTool(name="order_status", url="https://crm.example/orders?site=eu", method="GET", parameters=ORDER)
    post = HttpTool(name="order_status", url="https://crm.example/orders", method="POST", parameters=ORDER)
    args = {"order": "A-1", "customer_id": "C-1"}
    assert http_request(get, args) == SignedRequest(
        "GET", "https://crm.example/orders?site=eu&order=A-1&customer_id=C-1"
    )
    sent = http_request(post, {**args, "note": "é"})
    assert (sent.method, sent.url) == ("POST", "https://crm.example/orders")
    assert json.loads(sent.content) == {**args, "note": "é"}
    mcp = SignedRequest.mcp("https://mcp.example/mcp", {"b": 1, "a": "é"})
    assert mcp == SignedRequest("tools/call", "https://mcp.example/mcp", b'{"a":"\\u00e9","b":1}')
    context = CallContext("call-1", "+15551234567", "4300", "orders")
    texts = {
        json.dumps(context.document("order_status", "full", 1, r)["request"])
        for r in (
            http_request(get, args),
            http_request(get, {**args, "order": "A-2"}),
            http_request(post, args),
            http_request(post, {**args, "customer_id": "C-2"}),
            SignedRequest("DELETE", http_request(get, args).url),
            SignedRequest.mcp("https://mcp.example/mcp", args),
            SignedRequest.mcp("https://mcp.example/mcp", {**args, "order": "A-2"}),
            SignedRequest.mcp("https://other.example/mcp", args),
        )
    }
    assert len(texts) == 8


@pytest.mark.parametrize(
    ("secret", "says"),
    [
        ("s3cret-not-prefixed", "a context secret starts with whsec_"),
        ("whsec_not*base64", "this one is not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "must be 24 to 64 bytes (this one has 5)"),
    ],
)
def test_a_bad_secret_is_refused_without_quoting_it(secret: str, says: str) -> None:
    with pytest.raises(ValueError, match="context secret") as caught:
        context_key(secret)
    assert says in str(caught.value) and secret not in str(caught.value)


def test_pinned_arguments_are_out_of_the_models_schema_and_discarded_from_its_call() -> None:
    tool = HttpTool(name="order_status", url="https://crm.example/o", parameters=ORDER,
                    pin={"customer_id": "verified.customer_id"})  # fmt: skip
    assert set(tool.definition().parameters["properties"]) == {"order"}
    assert tool.definition().parameters["required"] == ["order"]
    assert set(tool.full_schema["properties"]) == {"order", "customer_id"}
    kept, discarded = strip_pinned('{"order": "A-1", "customer_id": "C-999"}', tool.pin)
    assert (json.loads(kept), discarded) == ({"order": "A-1"}, ("customer_id",))
    assert strip_pinned('{"order": "A-1"}', tool.pin) == ('{"order": "A-1"}', ())
    assert strip_pinned("[1]", tool.pin) == ("[1]", ())  # left for the schema's check to refuse


def test_a_verification_counts_only_when_it_verified_with_every_kept_field() -> None:
    assert answer_fields({"verified": True, "customer_id": "C-1", "dob": "x"}, ["customer_id"]) == {
        "customer_id": "C-1"
    }
    assert answer_fields({"verified": False, "customer_id": "C-1"}, ["customer_id"]) is None
    assert answer_fields({"ok": False}, []) is None
    assert answer_fields({"verified": True}, ["customer_id"]) is None
    assert answer_fields([1], []) is None
    context = CallContext()
    guard = Guard(context, {"order_status": ("verify_customer",)}, {"verify_customer": ("customer_id",)})
    pins = {"customer_id": "verified.customer_id"}
    refusal = guard.refusal("order_status", pins)
    assert refusal is not None and (refusal.error, refusal.waits_for) == ("unverified", ("verify_customer",))
    assert not guard.settle("verify_customer", ToolOutcome("{}", answer={"verified": False}))
    assert not guard.settle("verify_customer", ToolOutcome("{}", "http_status", answer={"customer_id": "C-1"}))
    assert guard.refusal("order_status", pins) is not None
    assert guard.settle("verify_customer", ToolOutcome("{}", answer={"verified": True, "customer_id": "C-1"}))
    assert guard.refusal("order_status", pins) is None
    assert context.verified == {"customer_id": "C-1", "tool": "verify_customer"}


def test_a_pin_on_a_verified_field_waits_for_the_tool_that_keeps_it() -> None:
    guard = Guard(CallContext(), {}, {"verify_customer": ("customer_id",)})
    refusal = guard.refusal("order_status", {"customer_id": "verified.customer_id"})
    assert refusal is not None and refusal.waits_for == ("verify_customer",)
    assert guard.refusal("order_status", {"caller": "caller"}) is None


def _plan(**over: Any) -> dict[str, Any]:
    lookup = {"name": "order_status", "url": "https://crm.example/o", "parameters": ORDER, **over}
    tools = [{"name": "verify_customer", "url": "https://crm.example/v"}, lookup]
    return {"name": "t", "match": ["1"], "verifiers": {"verify_customer": ["customer_id"]}, "http_tools": tools}


@pytest.mark.parametrize(
    ("plan", "field", "says"),
    [
        (_plan(pin={"customer_id": "verified.account"}), "http_tools[1].pin.customer_id",
         "verified.account: no tool of the plan's verifiers keeps account"),
        (_plan(verify_before="verify_cutsomer"), "http_tools[1].verify_before",
         "'verify_cutsomer' is not a tool of this plan"),
        ({**_plan(), "verifiers": {"verify_person": ["customer_id"]}}, "verifiers.verify_person",
         "'verify_person' is not a tool of this plan"),
        (_plan(pin={"account": "caller"}), "http_tools[1]", "pin: account not in parameters.properties"),
        (_plan(pin={"customer_id": "the_caller"}), "http_tools[1].pin", "'the_caller' is no value of the call's"),
        ({**_plan(), "tool_context": {"secret": "whsec_literal"}}, "tool_context",
         "secret: name env or file (a secret is never written in a dialplan)"),
    ],
)  # fmt: skip
def test_dialplan_check_names_the_field_of_a_bad_guard(
    tmp_path: Path, plan: dict[str, Any], field: str, says: str
) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(plan))
    [error] = check_file(path)
    assert (error.field, says in error.message) == (field, True), error


def test_a_tool_waits_for_its_own_verification_and_the_checks_one() -> None:
    plan = Dialplan.model_validate({**_plan(verify_before="verify_customer"), "http_tools": [
        {"name": "verify_customer", "url": "https://crm.example/v"}, {"name": "verify_pin", "url": "https://c/p"},
        {"name": "order_status", "url": "https://crm.example/o", "verify_before": "verify_customer"},
    ], "checks": {"verify_before": {"tool": "order_status", "after": "verify_pin"}}})  # fmt: skip
    assert plan.verify_first == {"order_status": ("verify_customer", "verify_pin")}


def test_the_documented_verification_verifies_a_context_and_refuses_a_replay_or_another_key() -> None:
    """docs/operating.md's snippet, as a tool's server would run it, on what the bridge signs."""
    page = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text(encoding="utf-8")
    section = page.split("## Business tools: authorizing a call", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    server: dict[str, Any] = {}
    exec(compile(code, "docs/operating.md", "exec"), server)  # the page's own example
    context = CallContext("call-1", "+15551234567", "4300", "orders")
    tool = HttpTool(name="order_status", url="https://crm.example/orders", method="POST", parameters=ORDER)
    request = http_request(tool, {"order": "A-1", "customer_id": "C-1"})
    verify = server["verify_context"]

    def fresh(req: SignedRequest = request) -> dict[str, str]:
        return signed(context_key(SECRET), context.document("order_status", "full", int(time.time()), req))

    headers = fresh()
    assert verify(headers, SECRET, "POST", request.url, request.content)["call_id"] == "call-1"
    with pytest.raises(ValueError, match="stale or replayed"):
        verify(headers, SECRET, "POST", request.url, request.content)
    other = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
    with pytest.raises(ValueError, match="bad signature"):
        verify(fresh(), other, "POST", request.url, request.content)
    moved = request.content.replace(b"A-1", b"A-2")  # the context of one call carried by another's request
    for method, url, body in (("POST", request.url, moved), ("PUT", request.url, request.content),
                              ("POST", "https://crm.example/refunds", request.content)):  # fmt: skip
        with pytest.raises(ValueError, match="not the request it was signed for"):
            verify(fresh(), SECRET, method, url, body)
    mcp = SignedRequest.mcp("https://mcp.example/mcp", {"order": "A-1"})
    assert verify(fresh(mcp), SECRET, "tools/call", mcp.url, mcp.content)["tool"] == "order_status"
