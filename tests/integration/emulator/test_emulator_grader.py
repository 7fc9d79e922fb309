"""The emulator's ``POST /v1/responses`` (bridge/emulator/grader.py): the replay's grader judged by a rule, refusing
what is no grader's task and a wrong key as the service would."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest

from bridge.emulator.server import EmulatorServer

pytestmark = pytest.mark.integration


def _request(task: Any) -> dict[str, Any]:
    return {"model": "gpt-4.1-mini", "input": [{"role": "user", "content": json.dumps(task)}]}


async def _post(server: EmulatorServer, body: Any, key: str = "") -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{server.http_url}/v1/responses", json=body, headers=headers) as response,
    ):
        return response.status, await response.json()


async def test_the_rule_answers_one_verdict_per_statement(emulator: EmulatorServer) -> None:
    task = {"statements": ["open nine to five on Saturdays", "closed on Saturdays"],
            "answer": "We are open from nine to five on Saturdays."}  # fmt: skip
    status, body = await _post(emulator, _request(task))
    assert status == 200 and body["status"] == "completed"
    found = json.loads(body["output"][0]["content"][0]["text"])["verdicts"]
    assert [(v["statement"], v["holds"]) for v in found] == [(0, True), (1, False)]
    assert body["usage"]["input_tokens"] > 0 and emulator.grader.requests == [_request(task)]


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"input": "x"}, "missing_required_parameter"),
        ({"model": "m", "input": "not a task"}, "invalid_value"),
        (_request({"statements": "one", "answer": "x"}), "invalid_value"),
        (_request({"statements": ["one"]}), "invalid_value"),
    ],
)
async def test_what_is_no_graders_task_is_a_400(emulator: EmulatorServer, body: Any, code: str) -> None:
    status, answer = await _post(emulator, body)
    assert status == 400 and answer["error"]["code"] == code


async def test_a_wrong_key_is_refused_where_the_emulator_has_one() -> None:
    async with EmulatorServer("127.0.0.1", 0, api_key="sk-right-key-0123456789") as server:
        task = _request({"statements": ["hello"], "answer": "hello"})
        status, answer = await _post(server, task, key="sk-wrong-key-0123456789")
        assert status == 401 and answer["error"]["code"] == "invalid_api_key"
        assert "sk-wrong-key-0123456789" not in answer["error"]["message"]
        assert (await _post(server, task, key="sk-right-key-0123456789"))[0] == 200
