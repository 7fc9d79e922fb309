"""The grader (``replay --grader-model``, bridge/replay/grader.py) over real HTTP: against the emulator's rule grader
(bridge/emulator/grader.py) a ``means`` that holds is green and one the answer flips is red; a grader that fails
(HTTP 500, a refusal, output not of the schema) is a red error naming the URL and what went wrong, never a pass;
the request is a Responses API request as the ``openai`` package types it, and the emulator's answer a ``Response``
the package parses."""

from __future__ import annotations

import asyncio
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from aiohttp import web
from openai.types.responses import Response
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from pydantic import TypeAdapter

from bridge.emulator.server import EmulatorServer
from bridge.replay.cli import main
from bridge.replay.grader import PROMPT

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
MODEL = "gpt-4.1-mini"
HOURS = "open nine to five on Saturdays"
GREETS = "greets the caller and offers help"


def _suite(tmp_path: Path, *names: str) -> Path:
    for name in names:
        shutil.copytree(REPO / "call_scripts" / name, tmp_path / "suite" / name)
    if not (tmp_path / "dialplans").exists():
        shutil.copytree(REPO / "dialplans", tmp_path / "dialplans")
    return tmp_path / "suite"


def _edit(suite: Path, name: str, **change: Any) -> None:
    """The model says something else: ``greeting=TEXT`` or ``turn0=TEXT`` (question_answer's answer), or
    ``after_tool=TEXT`` (the transfer's line)."""
    path = suite / name / "script.yaml"
    data = yaml.safe_load(path.read_text())
    if "greeting" in change:
        data["emulator"]["greeting"] = change["greeting"]
    if "turn0" in change:
        data["turns"][0]["reply"] = change["turn0"]
    if "after_tool" in change:
        data["turns"][0]["reply"]["after_tool"] = change["after_tool"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _replay(suite: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    argv = [str(suite), "--dialplans", str(suite.parent / "dialplans"), "--dialects", "ga", "--report", str(out)]
    code = main([*argv, "--quiet", "--grader-model", MODEL, *extra])
    return code, json.loads((out / "report.json").read_text())


async def _areplay(suite: Path, out: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    return await asyncio.to_thread(_replay, suite, out, *extra)


def _checks(data: dict[str, Any], name: str) -> dict[str, dict[str, Any]]:
    [script] = [s for s in data["scripts"] if s["script"] == name]
    return {c["name"]: c for c in script["runs"]["ga"]["checks"]}


def test_a_means_that_holds_is_green_and_the_grader_is_in_the_report(tmp_path: Path) -> None:
    code, data = _replay(_suite(tmp_path, "question_answer"), tmp_path / "out")
    assert code == 0, data["meta"]["gate"]["red"]
    checks = _checks(data, "question_answer")
    assert checks["turns[0].expect.means"]["ok"] and HOURS in checks["turns[0].expect.means"]["detail"]
    assert checks["turns[0].expect.must_not_mean"]["ok"]
    assert checks["expect.greeting.means"]["ok"]
    grader = data["meta"]["grader"]
    assert grader["model"] == MODEL and grader["rule"] and grader["prompt"] == PROMPT and grader["api"] == "responses"
    assert grader["requests"] == 2 and grader["errors"] == 0 and grader["input_tokens"] > 0
    assert grader["cost_usd"] > 0  # tokens x the price table's text rate for the model
    html = (tmp_path / "out" / "report.html").read_text()
    assert f"grader: {MODEL} (the emulator&#x27;s rule)" in html and "the grader's prompt" in html


@pytest.mark.parametrize(
    ("change", "red"),
    [
        (
            {"turn0": "We are NOT open from nine to five on Saturdays."},
            f"turns[0].expect.means: does not mean {HOURS!r} in the answer to turns[0] (grader: a negation added",
        ),
        (
            {"greeting": "Acme support is closed. Do not call us again today."},
            f"expect.greeting.means: does not mean {GREETS!r} in the greeting (grader: no sign it greets",
        ),
    ],
    ids=["answer negated", "greeting closed"],
)
def test_a_flipped_meaning_is_red_in_one_line(tmp_path: Path, change: dict[str, str], red: str) -> None:
    suite = _suite(tmp_path, "question_answer")
    _edit(suite, "question_answer", **change)
    code, data = _replay(suite, tmp_path / "out", "--junit", str(tmp_path / "replay.xml"))
    lines = data["meta"]["gate"]["red"]
    assert code == 1
    assert any(f"question_answer: failed: GA: {red}" in line and "\n" not in line for line in lines), lines
    failures = [f.text or "" for f in ET.parse(tmp_path / "replay.xml").iter("failure")]
    assert any(red in text for text in failures), failures


def test_a_paraphrase_is_green(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "question_answer")
    _edit(suite, "question_answer", turn0="On Saturdays, we're open from nine to five.",
          greeting="Hi, Acme support here. What can I do for you?")  # fmt: skip
    code, data = _replay(suite, tmp_path / "out")
    assert code == 0, data["meta"]["gate"]["red"]
    assert _checks(data, "question_answer")["turns[0].expect.means"]["ok"]


def test_a_rubric_is_judged_on_the_whole_call(tmp_path: Path) -> None:
    suite = _suite(tmp_path, "question_answer")
    path = suite / "question_answer" / "script.yaml"
    data = yaml.safe_load(path.read_text())
    data["rubric"] = ["greets the caller", "never says closed", "says goodbye"]
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    code, report = _replay(suite, tmp_path / "out")
    check = _checks(report, "question_answer")["rubric"]
    assert code == 1 and not check["ok"]
    assert check["detail"].startswith("does not hold 'says goodbye' in the call (grader: no sign it says goodbye")
    assert "greets" not in check["detail"] and "closed" not in check["detail"]  # those two hold


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """question_answer and transfer, unchanged: green with the grader (the shipped means hold), the baseline."""
    root = tmp_path_factory.mktemp("graded")
    code, data = _replay(_suite(root, "question_answer", "transfer"), root / "base")
    assert code == 0, data["meta"]["gate"]["red"]
    return root / "base"


@pytest.mark.parametrize(
    ("name", "change", "red"),
    [
        ("question_answer", {"greeting": "This is Acme support. Please hold."}, "expect.greeting.means: does not mean"),
        (
            "transfer",
            {"after_tool": "Of course. I am transferring you to voicemail now."},
            "expect.closing_line.means: does not mean 'transferring the caller to a colleague'",
        ),
    ],
    ids=["a greeting that neither greets nor helps", "transferred to voicemail"],
)
def test_a_candidate_only_the_grader_catches(
    baseline: Path, tmp_path: Path, name: str, change: dict[str, str], red: str
) -> None:
    """The pinned words still said, nothing never to be said, the answer close to the baseline's (no flip drift
    names): only the grader's ``means`` is red, and without the grader the candidate is green."""
    suite = _suite(tmp_path, "question_answer", "transfer")
    _edit(suite, name, **change)
    code, data = _replay(suite, tmp_path / "graded", "--baseline", str(baseline))
    lines = data["meta"]["gate"]["red"]
    assert code == 1 and lines and all(".means: does not mean" in line for line in lines), lines
    assert any(red in line for line in lines), lines
    argv = [str(suite), "--dialplans", str(tmp_path / "dialplans"), "--dialects", "ga", "--quiet"]
    assert main([*argv, "--baseline", str(baseline), "--report", str(tmp_path / "ungraded")]) == 0


@dataclass
class Service:
    """A grader service the test scripts: it answers every request with ``answer`` (an int: that HTTP status with
    an error body) and keeps what it got (path, Authorization header, body)."""

    url: str = ""
    answer: Any = 500
    got: list[dict[str, Any]] = field(default_factory=list)

    async def respond(self, request: web.Request) -> web.Response:
        self.got.append({"auth": request.headers.get("Authorization"), "body": await request.json()})
        if isinstance(self.answer, int):
            message = "The server had an error while processing your request."
            return web.json_response({"error": {"message": message, "type": "server_error"}}, status=self.answer)
        return web.json_response(self.answer)


@pytest.fixture
async def service() -> AsyncIterator[Service]:
    out = Service()
    app = web.Application()
    app.router.add_post("/v1/responses", out.respond)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    out.url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    try:
        yield out
    finally:
        await runner.cleanup()


def _output(content: list[dict[str, Any]]) -> dict[str, Any]:
    from bridge.emulator.grader import response

    body = response({"model": MODEL, "input": "x"}, [], 1)
    body["output"][0]["content"] = content
    return body


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (500, "HTTP 500: The server had an error while processing your request."),
        (_output([{"type": "refusal", "refusal": "I can't help with that."}]), "the model refused: I can't help"),
        (_output([{"type": "output_text", "text": '{"verdicts": []}', "annotations": []}]), "malformed output"),
        (_output([{"type": "output_text", "text": "Sure! The answer holds.", "annotations": []}]), "malformed output"),
        ({**_output([]), "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
         "response incomplete: max_output_tokens"),
    ],
    ids=["HTTP 500", "refusal", "too few verdicts", "not JSON", "incomplete"],
)  # fmt: skip
async def test_a_graders_error_is_a_red_error_naming_the_url(
    service: Service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: Any, why: str
) -> None:
    url = service.url
    service.answer = answer
    monkeypatch.setenv("OPENAI_API_KEY", "sk-grader-test-0123456789abcdef")
    code, data = await _areplay(_suite(tmp_path, "question_answer"), tmp_path / "out", "--grader-url", url)
    lines = data["meta"]["gate"]["red"]
    assert code == 1
    where = f"grader error: POST {url}/responses: {why}"
    assert any("turns[0].expect.means: " + where in line for line in lines), lines
    assert any("expect.greeting.means: " + where in line for line in lines), lines
    assert data["meta"]["grader"]["errors"] == 2
    assert len(service.got) == 2
    assert all(r["auth"] == "Bearer sk-grader-test-0123456789abcdef" for r in service.got)
    assert "sk-grader-test" not in (tmp_path / "out" / "report.json").read_text()


def test_a_grader_nobody_answers_is_a_red_error_naming_the_url(tmp_path: Path) -> None:
    url = "http://127.0.0.1:1/v1"  # a privileged port nothing listens on here
    code, data = _replay(_suite(tmp_path, "question_answer"), tmp_path / "out", "--grader-url", url)
    lines = data["meta"]["gate"]["red"]
    assert code == 1
    assert any(f"grader error: POST {url}/responses: cannot reach the grader" in line for line in lines), lines


def test_the_grader_at_openai_needs_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = [str(_suite(tmp_path, "question_answer")), "--dialplans", str(tmp_path / "dialplans")]
    assert main([*argv, "--grader-model", MODEL, "--grader-url", "https://api.openai.com/v1"]) == 2
    assert "OPENAI_API_KEY: the grader at https://api.openai.com/v1 needs the key" in capsys.readouterr().err


def test_without_a_grader_the_statements_are_said_unjudged(tmp_path: Path, capsys: Any) -> None:
    argv = [str(_suite(tmp_path, "question_answer")), "--dialplans", str(tmp_path / "dialplans"), "--dialects", "ga"]
    assert main([*argv, "--quiet"]) == 0
    assert "grader: off: 3 statement(s) (means, must_not_mean, rubric) not judged" in capsys.readouterr().out


async def test_the_request_and_the_answer_are_the_openai_packages_types(
    emulator: EmulatorServer, tmp_path: Path, oracle: Any
) -> None:
    code, data = await _areplay(
        _suite(tmp_path, "question_answer"), tmp_path / "out", "--grader-url", f"{emulator.http_url}/v1"
    )
    assert code == 0, data["meta"]["gate"]["red"]
    assert data["meta"]["grader"]["url"] == f"{emulator.http_url}/v1/responses"
    [first] = [r for r in emulator.grader.requests if json.loads(r["input"][0]["content"])["statements"] == [GREETS]]
    sent = TypeAdapter(ResponseCreateParamsNonStreaming).validate_python(first)
    assert sent == first  # nothing unknown to the type (it would be dropped), nothing coerced
    assert first["text"]["format"]["type"] == "json_schema" and first["text"]["format"]["strict"] is True
    assert first["store"] is False and first["model"] == MODEL
    # the same request through the SDK: the emulator's answer is a Response the package parses, strictly
    client = openai.AsyncOpenAI(base_url=f"{emulator.http_url}/v1", api_key="sk-none")
    raw = await client.responses.with_raw_response.create(**first)
    parsed = oracle.model(Response, json.loads(raw.text))
    verdicts = json.loads(parsed.output_text)["verdicts"]
    assert [v["holds"] for v in verdicts] == [True] and verdicts[0]["statement"] == 0
    await client.close()
