"""A caller cannot name another customer's record (issue 62, item 17). A real HTTP service (aiohttp, started by the
test) stands for the business's CRM and records every request it gets: its arguments and its call-context headers.
The model (the emulator's scripted function calls) is talked into ``order_status(order=VICTIM-ORDER-77)`` before
the caller is verified, and later into naming another customer's id:

* the tool that must wait for ``verify_customer`` is not called until it has verified the caller (a failed
  verification does not count); the model gets ``unverified``, saying to verify the caller first, and reads it out;
* the pinned ``customer_id`` is not in the schema the model got, and the server gets the verified id, whatever the
  model sent (its value is discarded, logged by name, counted);
* every request carries the signed call context (call id, the caller as the SIP side took it, what the verification
  returned, the request's method, URL and body digest as the server got them), which verifies with the plan's
  secret, by hand and with the ``standardwebhooks`` package, and not with another.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from prometheus_client import REGISTRY
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from bridge import metrics
from bridge.replay import direct
from bridge.replay.compare import DialectRun
from bridge.replay.direct import DirectOptions, replay_call
from bridge.replay.script import load_script
from bridge.replay.virtual import VirtualTimeLoop

pytestmark = pytest.mark.integration
SCRIPTS = Path(__file__).resolve().parents[3] / "call_scripts"
SECRET = "whsec_" + base64.b64encode(b"callbridge-context-key-of-acme-0001").decode()
OTHER = "whsec_" + base64.b64encode(b"someone-elses-key-that-is-long-enough").decode()
CALLER = "+15551234567"
CONTEXT_HEADERS = ("callbridge-context", "callbridge-context-id", "callbridge-context-timestamp",
                   "callbridge-context-signature")  # fmt: skip


class Crm:
    """The business's system: ``/verify`` (a date of birth -> the customer), ``/orders`` (an order, if it is the
    customer's); ``requests`` records each request's path, arguments and call-context headers as they arrive."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/verify", self.verify)
        app.router.add_get("/orders", self.orders)
        return app

    async def _record(self, request: web.Request, args: dict[str, Any]) -> None:
        context = {h: request.headers.get(h) for h in CONTEXT_HEADERS}
        got = {"method": request.method, "url": str(request.url), "sha256": hashlib.sha256(await request.read())}
        self.requests.append({"path": request.path, "args": args, "context": context,
                              "request": {**got, "sha256": got["sha256"].hexdigest()}})  # fmt: skip

    async def verify(self, request: web.Request) -> web.Response:
        args = await request.json()
        await self._record(request, args)
        if args.get("dob") != "1980-02-29":
            return web.json_response({"verified": False})
        return web.json_response({"verified": True, "customer_id": "C-123", "name": "Ada"})

    async def orders(self, request: web.Request) -> web.Response:
        args = dict(request.query)
        await self._record(request, args)
        return web.json_response({"order": args["order"], "status": "no such order for this customer"})


def turn(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"wait": "agent_done", "pause_ms": 300, "say": "q1_order.wav", "hears": "Where is my order?",
            "reply": {"tool_call": {"name": name, "arguments": arguments}}}  # fmt: skip


def plan(port: int) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    order = {"type": "object", "required": ["order", "customer_id"],
             "properties": {"order": {"type": "string"}, "customer_id": {"type": "string"}}}  # fmt: skip
    dob = {"type": "object", "properties": {"dob": {"type": "string"}}, "required": ["dob"]}
    return {
        "name": "orders-guarded", "match": ["4500"], "dialect": "ga", "greeting": "Greet the caller.",
        "profile": {"instructions": "Acme order desk.", "tools": ["end_call"]},
        "tool_context": {"secret": {"env": "ORDERS_CONTEXT_SECRET"}},  # caller: auto (loopback: in full)
        "verifiers": {"verify_customer": ["customer_id"]},
        "http_tools": [
            {"name": "verify_customer", "method": "POST", "parameters": dob, "url": f"{base}/verify",
             "context": {"secret": {"env": "ORDERS_CONTEXT_SECRET"}, "caller": "masked"}},
            {"name": "order_status", "method": "GET", "parameters": order, "url": f"{base}/orders",
             "pin": {"customer_id": "verified.customer_id"}, "verify_before": "verify_customer"},
        ],
        "checks": {"verify_before": {"tool": "order_status", "after": "verify_customer"}},
    }  # fmt: skip


TURNS = [
    turn("order_status", {"order": "VICTIM-ORDER-77"}),  # talked into it before any verification
    turn("verify_customer", {"dob": "1970-01-01"}),  # a wrong answer: not verified
    turn("order_status", {"order": "VICTIM-ORDER-77", "customer_id": "C-999"}),
    turn("verify_customer", {"dob": "1980-02-29"}),  # verified: customer C-123
    turn("order_status", {"order": "VICTIM-ORDER-77", "customer_id": "C-999"}),  # the victim's id: discarded
    {"wait": "agent_done", "pause_ms": 300, "hangup": True},
]


def checked_only(port: int) -> dict[str, Any]:
    """A plan of before the context: ``checks.verify_before`` its only word on verification (no pin, no secret)."""
    guarded = plan(port)
    order = {"type": "object", "properties": {"order": {"type": "string"}}, "required": ["order"]}
    verify, lookup = guarded["http_tools"]
    lookup = {k: v for k, v in lookup.items() if k not in ("pin", "verify_before")} | {"parameters": order}
    tools = [{k: v for k, v in verify.items() if k != "context"}, lookup]
    return {k: v for k, v in guarded.items() if k not in ("tool_context", "verifiers")} | {"http_tools": tools}


def write_script(tmp_path: Path, port: int, plan_of: Any = plan, turns: list[dict[str, Any]] = TURNS) -> Path:
    folder = tmp_path / "guarded"
    folder.mkdir()
    shutil.copy(SCRIPTS / "tool_end_call" / "q1_order.wav", folder / "q1_order.wav")
    script = {
        "description": "The model is talked into another customer's order, before and after verification.",
        "dialplan": plan_of(port),
        "caller": CALLER,
        "emulator": {"greeting": "Acme orders, how can I help?"},
        "turns": turns,
        "expect": {"max_errors": 0},
        "max_duration_s": 90,
    }
    (folder / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    return folder


async def with_crm(
    tmp_path: Path, plan_of: Any = plan, turns: list[dict[str, Any]] = TURNS, dialect: str = "ga"
) -> tuple[DialectRun, Crm]:
    crm = Crm()
    runner = web.AppRunner(crm.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        options = DirectOptions(listeners=[metrics.call_listener("ga", "orders-guarded")])
        script = write_script(tmp_path, runner.addresses[0][1], plan_of, turns)
        run = await replay_call(load_script(script), dialect, options)
    finally:
        await runner.cleanup()
    return run, crm


def guarded(guard: str) -> float:
    labels = {"dialplan": "orders-guarded", "tool": "order_status", "guard": guard}
    return REGISTRY.get_sample_value("callbridge_tool_guarded_total", labels) or 0.0


def by_hand(secret: str, headers: dict[str, str]) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = ".".join(headers[h] for h in CONTEXT_HEADERS[1:3]) + "." + headers["callbridge-context"]
    mac = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest()).decode()
    return hmac.compare_digest(headers["callbridge-context-signature"], f"v1,{mac}")


def with_standard_webhooks(secret: str, headers: dict[str, str]) -> bool:
    """What the business's server may run: the ``standardwebhooks`` package, the headers renamed."""
    names = {"webhook-id": "callbridge-context-id", "webhook-signature": "callbridge-context-signature",
             "webhook-timestamp": "callbridge-context-timestamp"}  # fmt: skip
    renamed = {theirs: headers[ours] for theirs, ours in names.items()}
    try:
        Webhook(secret).verify(headers["callbridge-context"], renamed)
    except WebhookVerificationError:
        return False
    return True


def test_a_tool_gets_the_signed_call_context_its_pinned_arguments_and_waits_for_verification(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("ORDERS_CONTEXT_SECRET", SECRET)
    clients: list[direct.InMemoryRealtime] = []
    connect = direct.InMemoryRealtime.connect

    async def keep(self: direct.InMemoryRealtime) -> None:  # the emulator each session opened: what it was sent
        clients.append(self)
        await connect(self)

    monkeypatch.setattr(direct.InMemoryRealtime, "connect", keep)
    before = {g: guarded(g) for g in ("unverified", "pinned_argument")}
    with caplog.at_level("INFO", logger="bridge.tools"), asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, crm = runner.run(with_crm(tmp_path))
    report = run.report
    assert run.ok, ([c for c in run.checks if not c.ok], report["agent_transcript"])

    # the model never saw the pinned argument: the session's tool has no customer_id
    tools = {t["name"]: t for t in clients[0].emulator.view.tools}
    assert set(tools["order_status"]["parameters"]["properties"]) == {"order"}
    assert tools["order_status"]["parameters"]["required"] == ["order"]

    # the CRM got the two verifications, and one order lookup only after the caller was verified, with the verified id
    assert [(r["path"], r["args"]) for r in crm.requests] == [
        ("/verify", {"dob": "1970-01-01"}),
        ("/verify", {"dob": "1980-02-29"}),
        ("/orders", {"order": "VICTIM-ORDER-77", "customer_id": "C-123"}),
    ]
    contexts = [r["context"] for r in crm.requests]
    assert all(by_hand(SECRET, c) and with_standard_webhooks(SECRET, c) for c in contexts)
    assert not any(by_hand(OTHER, c) or with_standard_webhooks(OTHER, c) for c in contexts)
    documents = [json.loads(c["callbridge-context"]) for c in contexts]
    assert len({c["callbridge-context-id"] for c in contexts}) == 3  # a new id for each request
    first, _, lookup = documents
    assert {k: first[k] for k in ("v", "call_id", "dialplan", "tool", "called", "caller", "caller_form")} == {
        "v": 1, "call_id": report["call_id"], "dialplan": "orders-guarded", "tool": "verify_customer",
        "called": "4500", "caller": "+*******4567", "caller_form": "masked",  # the tool's own setting: masked
    }  # fmt: skip
    assert first["verified"] is None and str(first["ts"]) == contexts[0]["callbridge-context-timestamp"]
    assert (lookup["tool"], lookup["caller"], lookup["caller_form"]) == ("order_status", CALLER, "full")  # loopback
    assert lookup["verified"] == {"tool": "verify_customer", "customer_id": "C-123"}  # only the fields the plan keeps
    # each context is signed for the request that carries it: its method, its URL (a GET's arguments in the query)
    # and its body, as the server got them
    assert [d["request"] for d in documents] == [r["request"] for r in crm.requests]
    assert lookup["request"]["url"].endswith("/orders?order=VICTIM-ORDER-77&customer_id=C-123")

    # the model was told to verify first, twice, and read it out; the refusals are in the report and counted
    calls = report["tool_calls"]
    assert [(c["name"], c["outcome"]) for c in calls] == [
        ("order_status", "unverified"), ("verify_customer", "ok"), ("order_status", "unverified"),
        ("verify_customer", "ok"), ("order_status", "ok"),
    ]  # fmt: skip
    told = calls[0]["output"]["error"]["message"]
    assert (
        told.startswith("order_status was not called: the caller must be verified first.") and "verify_custom" in told
    )
    assert any("the caller must be verified first" in line for line in report["agent_transcript"])
    assert [s for _, k, s in report["timeline"] if k == "tool_guarded"] == [
        "order_status: not called, the caller is not verified (verify_customer)",
        "order_status: not called, the caller is not verified (verify_customer)",
        "order_status: the model's customer_id discarded (pinned by the plan)",
    ]
    [check] = report["checks"]
    assert check["passed"] and check["detail"] == (
        "order_status was called 1 time(s), each after verify_customer succeeded; 2 call(s) refused before "
        "verify_customer succeeded"
    )
    assert {g: guarded(g) - before[g] for g in before} == {"unverified": 2, "pinned_argument": 1}
    assert "the model sent customer_id, which the plan pins to the call's context: discarded" in caplog.text
    assert "C-999" not in caplog.text and SECRET.removeprefix("whsec_") not in caplog.text


def test_a_context_secret_that_is_not_set_sends_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDERS_CONTEXT_SECRET", raising=False)
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, crm = runner.run(with_crm(tmp_path))
    assert crm.requests == []  # the plan promised its tools a signed context: without it, no request at all
    outcomes = [(c["name"], c["outcome"]) for c in run.report["tool_calls"]]
    assert outcomes == [("order_status", "unverified"), ("verify_customer", "unreachable"),
                        ("order_status", "unverified"), ("verify_customer", "unreachable"),
                        ("order_status", "unverified")]  # fmt: skip


def test_checks_verify_before_is_enforced_before_the_tool_runs(tmp_path: Path) -> None:
    """A plan's ``checks.verify_before`` alone (it was only reported after the call) keeps the tool from running."""
    lookup = turn("order_status", {"order": "VICTIM-ORDER-77"})
    turns = [lookup, TURNS[1], lookup, TURNS[3], lookup, TURNS[-1]]  # the same lookup, each time: no pin to it
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, crm = runner.run(with_crm(tmp_path, checked_only, turns))
    assert [r["path"] for r in crm.requests] == ["/verify", "/verify", "/orders"]  # the lookup only once verified
    assert all(r["context"]["callbridge-context"] is None for r in crm.requests)  # no secret named: no context
    outcomes = [c["outcome"] for c in run.report["tool_calls"] if c["name"] == "order_status"]
    assert outcomes == ["unverified", "unverified", "ok"]
    [check] = run.report["checks"]
    assert check["passed"], check


def test_a_grouped_dialect_holds_the_refusal_with_its_response_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GPT-Live: a response's tool outputs go out together (``grouped``); a refused call is one of them."""
    monkeypatch.setenv("ORDERS_CONTEXT_SECRET", SECRET)
    with asyncio.Runner(loop_factory=VirtualTimeLoop) as runner:
        run, crm = runner.run(with_crm(tmp_path, dialect="live"))
    assert run.ok, ([c for c in run.checks if not c.ok], run.report["agent_transcript"])
    assert [(r["path"], r["args"].get("customer_id")) for r in crm.requests] == [
        ("/verify", None), ("/verify", None), ("/orders", "C-123"),
    ]  # fmt: skip
    outcomes = [c["outcome"] for c in run.report["tool_calls"] if c["name"] == "order_status"]
    assert outcomes == ["unverified", "unverified", "ok"]
    assert sum("the caller must be verified first" in line for line in run.report["agent_transcript"]) == 2
