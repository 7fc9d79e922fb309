"""The supervisor API against its own OpenAPI description, as an integrator checks it: schemathesis (its command line,
every check on, positive and negative cases) against a real ``serve`` over a real redis-server, with an admin's API
token, and no failure. The event streams and WebSockets are left out (a request/response fuzzer cannot read an
answer that never ends); every other route of the document is run."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _http_node import Node, serve_node

from bridge.devkit.redis_server import EmbeddedRedis, redis_server_binary
from bridge.supervisor.accounts import Users, add_token, add_user, save_users

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(redis_server_binary() is None, reason="needs a redis-server binary"),
    pytest.mark.skipif(
        shutil.which("schemathesis", path=str(Path(sys.executable).parent)) is None,
        reason="pip install 'callbridge[test]' (schemathesis)",
    ),
]
STREAMS = r"^/api/live/|/listen$|/takeover/audio$"  # server-sent events and WebSockets
# A valid request may also meet 422: an Idempotency-Key the fuzzer already sent with another call or body (the
# IETF draft's answer; docs/operating.md); schemathesis's other default statuses for a valid request, as they are.
# A rollout change or its preview may also meet 400: its weights and lists name the variants of the plan in its path
# and callers' numbers, each refused by name when the plan has no such variant (the description gives 400 for it;
# which names a plan has is the plan's, not the description's).
ACCEPTED = '["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"'
CONFIG = f"""
[checks.positive_data_acceptance]
expected-statuses = {ACCEPTED}]

[[operations]]
include-path = ["/api/rollout/{{dialplan}}", "/api/rollout/{{dialplan}}/preview"]
include-method = ["PUT", "POST"]
checks.positive_data_acceptance.expected-statuses = {ACCEPTED}, "400"]
"""


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[tuple[Node, str]]:
    users = add_user(Users(), "ada", "admin", "ada-admin-password-2")
    users, token = add_token(users, "ada")
    save_users(tmp_path / "users.yaml", users)
    with EmbeddedRedis() as redis:
        settings = {"users_file": str(tmp_path / "users.yaml"), "redis_url": redis.url, "listen_key": "k" * 32,
                    "http_api_requests_per_minute": 1_000_000, "http_signin_failures": 10_000}  # fmt: skip
        async with serve_node(tmp_path, settings, {}) as node:
            yield node, token


async def test_schemathesis_finds_no_failure_with_every_check(node: tuple[Node, str], tmp_path: Path) -> None:
    serve, token = node
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    command = [
        str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(tmp_path / "schemathesis.toml"),
        "run", f"{serve.url}/api/openapi.json",
        "--header", f"Authorization: Bearer {token}", "--checks", "all", "--max-examples", "30", "--seed", "20261128",
        "--exclude-path-regex", STREAMS, "--request-timeout", "15", "--workers", "1", "--no-color",
        "--report", "junit", "--report-dir", str(tmp_path / "report"),
    ]  # fmt: skip
    env = os.environ | {"SCHEMATHESIS_HOOKS": str(Path(__file__).with_name("_schemathesis_hooks.py"))}
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path, env=env
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 540)
    said = out.decode(errors="replace")
    assert proc.returncode == 0, said[-12000:]
    counted = re.search(r"Selected: (\d+)/\d+\s+Tested: (\d+)", said)
    assert counted and counted[1] == counted[2] and "unique failures" not in said, said[-4000:]
    log = serve.log.read_text()
    assert "Traceback" not in log and token not in log, log[-3000:]
