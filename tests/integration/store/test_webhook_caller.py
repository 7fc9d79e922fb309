"""``serve`` says, at start, each webhook endpoint that gets the callers' full numbers (issue 62 item 12): one line
per such endpoint, naming it and the setting, with its URL masked as every log masks a URL; against a real Redis."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.devkit.redis_server import EmbeddedRedis
from bridge.serve.webhooks import start_node


async def test_serve_says_each_endpoint_that_gets_full_numbers_in_one_line(
    redis_server: EmbeddedRedis, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plans = tmp_path / "dialplans"
    plans.mkdir()
    (plans / "sales.yaml").write_text("name: sales\nmatch: ['1']\nwebhooks:\n"
                                      "  - {url: 'https://crm.example/h', secret: {env: A}, caller: full, name: crm}\n"
                                      "  - {url: 'https://qa.example/h', secret: {env: B}, name: qa}\n")  # fmt: skip
    settings = Settings(
        dialplans=plans, redis_url=redis_server.url, webhook_url="https://ops.example/h?key=k3y",
        webhook_secret="whsec_" + "A" * 40, webhook_caller="full", spool_dir=tmp_path / "spool",
    )  # fmt: skip
    with caplog.at_level(logging.INFO, logger="bridge.webhooks"):
        node = start_node(settings)
        assert node is not None
        await node.close()
    said = [r.getMessage() for r in caplog.records if "carry the callers' full numbers" in r.getMessage()]
    assert [line.split(" carry ")[0] for line in said] == [
        "webhooks to default (https://ops.example/h?key=****)",  # the URL as every log shows it: no token
        "webhooks to sales.crm (https://crm.example/h)",
    ]
    assert said[0].endswith("(webhook_caller: full)") and said[1].endswith("(caller: full in dialplan sales)")
