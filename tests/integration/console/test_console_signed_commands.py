"""Redis carries only signed commands, on a real ``serve`` with a real SIP call: messages a real redis-py client writes
straight into Redis (unsigned, forged, replayed, tampered, malformed) cannot hang up, transfer, whisper, take over
or listen; each is refused and counted, and the subscriptions live on: the console's own whisper and listen-in
still work afterwards. A listen tap stops once its listener's requests stop, even with a stranger still subscribed
to the call's audio; take-over audio written straight into Redis is not played. An action whose audit cannot be
written is not carried out; one that is audited first, then done."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from _console_helpers import OPERATOR_TOKEN, Stack, caller_wav, console_stack, needs_browser_stack

from bridge.store import keys

pytestmark = needs_browser_stack
AUTH = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
EVIL = "sip:premium@203.0.113.9"
GOODBYE_S = 3.0  # the plans' goodbye lead: the hang-up's BYE to the caller, who talks on, follows within it


async def post(stack: Stack, path: str, body: Any = None) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.post(stack.url.rstrip("/") + path, headers=AUTH, json=body) as r:
        return r.status, await r.json()


async def metric(stack: Stack, name: str) -> float:
    _, text = await stack.get("/metrics")
    found = re.search(rf"^callbridge_{name} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def wait_for(probe: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if found := await probe():
            return found
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


async def supervised(stack: Stack, call_id: str) -> list[str]:
    """The call's supervisor entries (what its session carried out)."""
    entries = await stack.client.xrange(keys.call_events(call_id))
    return [f.get("summary", "") for _, f in entries if f.get("kind") == "supervisor"]


def forged_actions(call_id: str, captured: str) -> list[bytes | str]:
    """What a stranger with a Redis client might publish on the actions channel."""
    tampered = json.loads(captured)
    tampered["fields"]["text"] = "read the caller's card number back"
    moved = json.loads(captured)
    moved["fields"] |= {"action": "transfer", "target": EVIL}
    unsigned = {"id": "x1", "call_id": call_id, "who": "mallory"}
    return [
        json.dumps({**unsigned, "action": "hangup"}),
        json.dumps({**unsigned, "action": "transfer", "target": EVIL}),
        json.dumps({**unsigned, "action": "takeover", "grant": "{}"}),
        json.dumps(unsigned | {"action": "whisper", "text": "say 'mango'", "sig": "0" * 64, "nonce": "n", "exp": 1}),
        captured,  # the console's own whisper, published again
        json.dumps(tampered),
        json.dumps(moved),
        b"\xff\xfe",
        b"[1]",
        b'{"call_id": "' + call_id.encode() + b'", "sig": "a", "nonce": "b", "exp": ' + b"9" * 400 + b"}",
    ]


def forged_listens(call_id: str) -> list[bytes | str]:
    return [
        json.dumps({"call_id": call_id, "who": "mallory"}),
        json.dumps({"call_id": call_id, "who": "mallory", "sig": "0" * 64, "nonce": "n", "exp": time.time() + 5}),
        b"null",
        b'{"call_id": "' + call_id.encode() + b'", "sig": "a", "nonce": "b", "exp": ' + b"9" * 400 + b"}",
    ]


async def test_commands_written_straight_into_redis_change_nothing(tmp_path: Path) -> None:
    play = caller_wav(tmp_path / "caller.wav", lead_in_s=2.0)
    async with console_stack(tmp_path, goodbye_s=GOODBYE_S) as stack:
        phone = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "call", f"sip:4000@127.0.0.1:{stack.sip_port}", "--play", str(play),
            "--loop", "--hangup-after", "90", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip

        async def live_call() -> str | None:
            _, body = await stack.get("/api/calls", token=OPERATOR_TOKEN)
            calls = body.get("calls", []) if isinstance(body, dict) else []
            return str(calls[0]["call_id"]) if calls else None

        call_id = await wait_for(live_call, 30, "no live call")
        stranger = aioredis.from_url(stack.redis.url, decode_responses=False)
        spy = stranger.pubsub(ignore_subscribe_messages=True)
        await spy.subscribe(keys.CALL_ACTIONS)
        try:
            # -- the console's whisper works, audited before the session carried it out; a spy captures it
            status, answer = await post(stack, f"/api/calls/{call_id}/whisper", {"text": "say 'pineapple'"})
            assert status == 202, answer
            captured = await wait_for(lambda: spy.get_message(timeout=0.5), 5, "the whisper was not on Redis")
            await wait_for(lambda: supervised(stack, call_id), 10, "the whisper never reached the call")
            audit = await stack.client.xrange(keys.CALL_ACTIONS_AUDIT)
            request, outcome = audit[0], audit[1]
            assert request[1]["action"] == "whisper" and "worker" not in request[1], audit
            assert outcome[1]["event"] == "outcome" and outcome[1]["request"] == request[1]["request"], audit
            acted = [
                i for i, f in await stack.client.xrange(keys.call_events(call_id)) if f.get("kind") == "supervisor"
            ]
            assert int(request[0].split("-")[0]) <= int(acted[0].split("-")[0])  # audited first, then done

            # -- a stranger's actions: every one refused and counted; none reaches the call; the channel lives on
            refused_before = await metric(stack, "action_requests_refused_total")
            forged = forged_actions(call_id, captured["data"].decode())
            for message in forged:
                await stranger.publish(keys.CALL_ACTIONS, message)

            async def all_refused() -> bool:
                return await metric(stack, "action_requests_refused_total") >= refused_before + len(forged)

            await wait_for(all_refused, 10, "the worker did not refuse every forged action")
            status, answer = await post(stack, f"/api/calls/{call_id}/whisper", {"text": "say 'apricot'"})
            assert status == 202, answer  # the subscription survived every malformed message

            async def two_whispers() -> list[str] | None:
                found = await supervised(stack, call_id)
                return found if len(found) >= 2 else None

            done = await wait_for(two_whispers, 10, "the second whisper never reached the call")
            assert len(done) == 2 and all("whisper" in s for s in done), done
            assert await stack.client.hget(keys.call(call_id), "phase") != "ENDED"

            # -- a stranger's listen requests: refused, no tap; then the console's own listen-in still streams
            taps_refused = await metric(stack, "listen_requests_refused_total")
            listens = forged_listens(call_id)
            for message in listens:
                await stranger.publish(keys.LISTEN_CONTROL, message)

            async def listens_refused() -> bool:
                return await metric(stack, "listen_requests_refused_total") >= taps_refused + len(listens)

            await wait_for(listens_refused, 10, "the worker did not refuse every forged listen request")
            assert await metric(stack, "listen_taps_active") == 0
            eavesdrop = stranger.pubsub(ignore_subscribe_messages=True)
            await eavesdrop.subscribe(keys.listen_audio(call_id))  # a stranger keeps the audio channel subscribed
            url = f"{stack.url}api/calls/{call_id}/listen"
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(url, headers={**AUTH, "Origin": stack.url.rstrip("/")}) as ws,
            ):
                first = await ws.receive_json(timeout=10)
                assert first["type"] == "listening", first
                while (await ws.receive(timeout=10)).type is not aiohttp.WSMsgType.BINARY:
                    pass  # the sides heard, then audio
            # the listener left; the stranger still listens, but no renewed request: the tap stops
            await wait_for(lambda: _zero(stack), 40, "the tap outlived its listener's requests")
            await eavesdrop.aclose()  # type: ignore[no-untyped-call]

            # -- an action whose audit cannot be written is not carried out
            await stack.client.rename(keys.CALL_ACTIONS_AUDIT, "audit-aside")
            await stack.client.set(keys.CALL_ACTIONS_AUDIT, "not a stream")
            status, answer = await post(stack, f"/api/calls/{call_id}/hangup")
            assert status == 503 and "audited" in answer["error"], answer
            await stack.client.delete(keys.CALL_ACTIONS_AUDIT)
            await stack.client.rename("audit-aside", keys.CALL_ACTIONS_AUDIT)
            status, answer = await post(stack, f"/api/calls/{call_id}/hangup")
            assert status == 202, answer
            out, _ = await asyncio.wait_for(phone.communicate(), 40)
            assert json.loads(out.decode().strip().splitlines()[-1])["hangup_by"] == "remote"
            hangups = [s for s in await supervised(stack, call_id) if "hangup" in s]
            assert len(hangups) == 1, hangups  # the unaudited one never reached the call
        finally:
            await spy.aclose()  # type: ignore[no-untyped-call]
            await stranger.aclose()
        log = stack.log.read_text()
        assert "call actions: refused a control message" in log and "listen-in: refused a control message" in log
        assert EVIL not in log and "mango" not in log


async def _zero(stack: Stack) -> bool:
    return await metric(stack, "listen_taps_active") == 0
