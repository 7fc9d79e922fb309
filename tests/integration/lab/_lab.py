"""Helpers of the lab's tests: the lab per module, waits, and what Redis and the nodes say about the calls."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from bridge.devkit.labstack import CallLab, Plan
from bridge.store import keys

Phone = asyncio.Task[dict[str, Any]]  # a softphone's call: its --json result

# Heavy (two nodes, Kamailio, the model, Redis): one after another on the CPU-heavy tests' worker (tests/conftest.py).
# A module's tests share its lab: a test leaves it as it found it.
marks = [
    pytest.mark.lab,
    pytest.mark.integration,
    pytest.mark.xdist_group("cpu"),
]
if importlib.util.find_spec("pytest_timeout"):
    marks.append(pytest.mark.timeout(240))


def lab_of(request: pytest.FixtureRequest, plan: Plan) -> Iterator[CallLab]:
    """A lab for the requesting module, in its own temporary directory; stopped (namespaces deleted) after it."""
    run_dir = request.getfixturevalue("tmp_path_factory").mktemp("lab")
    lab = CallLab(run_dir, plan).start()
    try:
        yield lab
    finally:
        lab.stop()


async def wait_for(check: Callable[[], Any], what: str, within_s: float = 30.0, every_s: float = 0.2) -> Any:
    """Poll ``check`` (a plain or async function) until it returns something truthy; TimeoutError naming ``what``."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if isinstance(last, Awaitable):
            last = await last
        if last:
            return last
        await asyncio.sleep(every_s)
    raise TimeoutError(f"{what} (last: {last!r})")


def live_calls(lab: CallLab, node: str) -> set[str]:
    """The bridge's ids of the calls live on ``node``'s workers, as Redis holds them."""
    client = lab.redis(lab.redis_host)
    try:
        return {str(c) for w in lab.workers(node) for c in client.smembers(keys.worker_calls(w))}
    finally:
        client.close()


def call_state(lab: CallLab, call_id: str) -> dict[str, str]:
    client = lab.redis(lab.redis_host)
    try:
        return {str(k): str(v) for k, v in client.hgetall(keys.call(call_id)).items()}
    finally:
        client.close()


def event_ids(lab: CallLab, call_id: str) -> list[str]:
    """The ids of the call's event stream entries (``<ms>-<seq>``, stamped by the worker that wrote them)."""
    client = lab.redis(lab.redis_host)
    try:
        return [str(entry_id) for entry_id, _ in client.xrange(keys.call_events(call_id))]
    finally:
        client.close()


def report_of(lab: CallLab, node: str, sip_call_id: str) -> dict[str, Any] | None:
    """``node``'s report of the call the caller knows by ``sip_call_id``."""
    return next((r for r in lab.reports(node) if r.get("sip_call_id") == sip_call_id), None)


@contextlib.asynccontextmanager
async def one_call_each(lab: CallLab, seconds: float) -> AsyncIterator[tuple[list[Phone], dict[str, str]]]:
    """A call for each node of the lab (the front's call load sends the next one to a node without a call): the
    softphones' tasks and node -> the bridge's id of its call. A softphone still running when the block ends (it
    failed) is ended."""
    nodes = lab.plan.node_names
    phones: list[Phone] = []
    try:
        for count in range(1, len(nodes) + 1):
            phones.append(asyncio.create_task(lab.call(seconds)))

            def placed(count: int = count) -> bool:
                return sum(len(live_calls(lab, n)) for n in nodes) >= count

            await wait_for(placed, f"{count} call(s) live", 40)

        def each() -> dict[str, str] | None:
            live = {node: live_calls(lab, node) for node in nodes}
            return {n: next(iter(c)) for n, c in live.items()} if all(len(c) == 1 for c in live.values()) else None

        yield phones, await wait_for(each, f"one live call on each of {nodes}", 20)
    finally:
        for phone in phones:
            phone.cancel()
        await asyncio.gather(*phones, return_exceptions=True)
