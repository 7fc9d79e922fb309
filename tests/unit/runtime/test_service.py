"""A Service is started on the way into ``async with`` and closed on the way out, also when the block raises."""

from __future__ import annotations

import asyncio

import pytest

from bridge.runtime.service import Service


class _Probe(Service):
    def __init__(self) -> None:
        self.steps: list[str] = []

    async def start(self) -> None:
        self.steps.append("start")

    async def close(self) -> None:
        self.steps.append("close")


def test_async_with_starts_then_closes_and_hands_over_the_service() -> None:
    async def run() -> list[str]:
        probe = _Probe()
        async with probe as entered:
            assert entered is probe
            probe.steps.append("body")
        return probe.steps

    assert asyncio.run(run()) == ["start", "body", "close"]


def test_a_raising_block_still_closes_and_the_error_goes_on() -> None:
    probe = _Probe()

    async def run() -> None:
        async with probe:
            raise LookupError("in the block")

    with pytest.raises(LookupError, match="in the block"):
        asyncio.run(run())
    assert probe.steps == ["start", "close"]
