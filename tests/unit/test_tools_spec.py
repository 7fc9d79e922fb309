"""A dialplan's HTTP tools and MCP servers as data: schema, URL and header checks by field, argument validation,
typed errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.dialplan import check_file, load_dialplan, plan_warnings
from bridge.tools.spec import HttpTool, ToolOutcome, argument_errors

PLAN = """name: t
match: ['1']
profile: {tools: [end_call]}
http_tools:
  - name: order_status
    url: %s
    parameters: %s
    headers: %s
"""
SCHEMA = "{type: object, properties: {order: {type: string}}, required: [order]}"


def _check(
    tmp_path: Path, url: str = "https://orders.example/s", schema: str = SCHEMA, headers: str = "{}"
) -> list[str]:
    path = tmp_path / "t.yaml"
    path.write_text(PLAN % (url, schema, headers))
    return [f"{e.field}: {e.message}" for e in check_file(path)]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"url": "ftp://orders.example/s"}, "http_tools[0].url: Value error, not an http(s) URL with a host"),
        ({"url": "https://u:p@orders.example/s"}, "http_tools[0].url: Value error, credentials in the URL"),
        ({"schema": "{type: object, properties: {order: {type: strang}}}"},
         "http_tools[0].parameters: Value error, not a valid JSON Schema at properties/order/type"),
        ({"schema": "{type: array}"}, "http_tools[0].parameters: Value error, the arguments' schema must have type"),
        ({"headers": "{X-Key: {env: A, file: /b}}"}, "a header is a string, or names exactly one of env or file"),
        ({"headers": "{'Bad Header': x}"}, "is not a header name"),
    ],
)  # fmt: skip
def test_dialplan_check_names_the_field_of_a_bad_tool(tmp_path: Path, kw: dict[str, str], error: str) -> None:
    (found,) = _check(tmp_path, **kw)
    assert error in found


def test_a_good_tool_is_offered_to_the_model_beside_the_profiles_tools(tmp_path: Path) -> None:
    assert _check(tmp_path, headers="{Authorization: {env: ORDERS_TOKEN, prefix: 'Bearer '}}") == []
    path = tmp_path / "t.yaml"
    path.write_text((PLAN % ("https://o.example/s", SCHEMA, "{}")) + "  - {name: end_call, url: 'https://o.example'}\n")
    (err,) = check_file(path)
    assert "'end_call' is also a tool of the profile" in err.message


def test_arguments_are_checked_against_the_schema_and_errors_are_typed() -> None:
    tool = HttpTool(name="t", url="http://h/x", parameters=json.loads('{"type":"object","properties":'
                    '{"order":{"type":"string"}},"required":["order"]}'))  # fmt: skip
    assert argument_errors(tool.parameters, '{"order": "A-1"}') == ({"order": "A-1"}, None)
    assert argument_errors(tool.parameters, '{"order": 7}')[1] == "order: 7 is not of type 'string'"
    assert argument_errors(tool.parameters, "[1]")[1] == "the arguments must be a JSON object"
    assert argument_errors(tool.parameters, "{")[1] == "the arguments are not valid JSON"
    assert (tool.attempts, HttpTool(name="p", url="http://h", method="GET", retries=2).attempts) == (1, 3)
    failed = ToolOutcome.failed("timeout", "the t service did not answer")
    assert json.loads(failed.output) == {
        "ok": False,
        "error": {"type": "timeout", "message": "the t service did not answer"},
    }
    assert not failed.ok and tool.failure() == "the t service did not answer"


MCP_PLAN = """name: m
match: ['1']
mcp_servers:
  - name: orders
    url: https://mcp.example/mcp
    headers: %s
"""


def _check_mcp(tmp_path: Path, headers: str) -> tuple[list[str], list[str]]:
    """(the errors of ``dialplan check``, its warnings), each ``field: message``."""
    path = tmp_path / "m.yaml"
    path.write_text(MCP_PLAN % headers)
    errors = [f"{e.field}: {e.message}" for e in check_file(path)]
    warnings = [] if errors else [f"{w.field}: {w.message}" for w in plan_warnings(load_dialplan(path))]
    return errors, warnings


def test_an_mcp_servers_secret_headers_are_checked_by_field_and_never_read_by_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ORDERS_MCP_TOKEN", raising=False)
    where = "mcp_servers[0].headers"
    (error,), _ = _check_mcp(tmp_path, "{X-Key: {env: A, file: /b}}")
    assert error.startswith(where) and "a header is a string, or names exactly one of env or file" in error
    (error,), _ = _check_mcp(tmp_path, "{'Bad Header': x}")
    assert error.startswith(where) and "'Bad Header' is not a header name" in error
    (error,), _ = _check_mcp(tmp_path, "{X-Key: {env: 'no-such-name'}}")
    assert error.startswith(f"{where}.X-Key.env")
    missing = tmp_path / "absent" / "token"
    assert _check_mcp(tmp_path, f"{{X-Key: {{file: {missing}}}}}") == (
        [f"{where}.X-Key.file: no readable file: {missing}"],
        [],
    )
    # a variable not set where the check runs: valid, and a warning (calls would go without the server's tools)
    bearer = "{Authorization: {env: ORDERS_MCP_TOKEN, prefix: 'Bearer '}}"
    assert _check_mcp(tmp_path, bearer) == (
        [],
        [f"{where}.Authorization.env: the variable ORDERS_MCP_TOKEN is not set (the header's secret)"],
    )
    monkeypatch.setenv("ORDERS_MCP_TOKEN", "mcp-secret-7f3a")
    secret_file = tmp_path / "token"
    secret_file.write_text("file-secret-91b2\n")
    assert _check_mcp(tmp_path, f"{{Authorization: {{env: ORDERS_MCP_TOKEN}}, X-Key: {{file: {secret_file}}}}}") == (
        [],
        [],
    )
    server = load_dialplan(tmp_path / "m.yaml").mcp_servers[0]
    assert server.headers["X-Key"].file == str(secret_file)
    shown = repr(server)  # the plan holds where a secret is, never the secret
    assert "ORDERS_MCP_TOKEN" in shown and "mcp-secret-7f3a" not in shown and "file-secret-91b2" not in shown


def test_the_tools_know_no_dialplan_not_even_for_types() -> None:
    import ast

    import bridge.tools

    for path in Path(bridge.tools.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            assert not any(n.startswith("bridge.dialplan") for n in names), path.name
