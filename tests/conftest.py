"""Shared fixtures: a live Realtime emulator, the ``openai`` package's typed models as the protocol oracle, and a
check that every async test leaves no task of its own running; and how the suite is split between pytest-xdist
workers (``./dev test`` runs ``-n 4 --dist loadgroup``):

* each worker hands out ports from a range of its own (``pytest_configure``);
* a test using a module- or class-scoped fixture runs on its file's worker (``pytest_collection_modifyitems``);
* ``@pytest.mark.xdist_group("cpu")``: the tests that load the CPU with many processes or calls at once (the front's
  pools, the bench runs, forty SIPp callers, twenty concurrent drops) and the tests that measure a real-time call's
  audio to the frame (bridge audio, barge-in, DTMF) run one after another on one worker: a timing-precise test never
  shares the CPU with a heavy one, and at most one heavy test competes with the other workers. A new test that
  starts a pool of nodes, Kamailio or more than a handful of concurrent calls, or that asserts audio timing within
  a few frames, takes this mark (the group is the suite's longest chain: keep it under half the suite's time). A
  test that starts one worker and its front and stops them once ready, carrying no call, costs what a start without
  the front does and stays out (tests/integration/serve/test_serve_log_levels.py);
* a test that binds a fixed address and port, or writes a fixed path, needs a group with every test it conflicts
  with (none does today: the loopback aliases 127.0.0.2/127.0.0.3 are shared, their ports are not).
"""

from __future__ import annotations

import asyncio
import ctypes
import fnmatch
import inspect
import os
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar

import pytest
from openai.types.beta.realtime import RealtimeClientEvent as BetaClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent
from openai.types.realtime import RealtimeClientEvent as GAClientEvent
from openai.types.realtime import RealtimeServerEvent as GAServerEvent
from pydantic import BaseModel, TypeAdapter

from bridge.devkit.ports import PORT_RANGE_ENV
from bridge.emulator import EmulatorServer

WORKER_PORTS = (20000, 31999)  # below the kernel's ephemeral ports (32768 up), where client sockets get theirs
SHARED_SCOPES = ("package", "module", "class")  # a fixture of these scopes is set up once per worker that uses it
# The suite's `serve` processes show /healthz's detail (workers, ports, the front), which many tests wait on; the
# default (only {"ready"} without a token) is tested in tests/integration/serve/test_serve_http_limits.py.
HEALTH_DETAIL_ENV = "CALLBRIDGE_HTTP_HEALTH_DETAIL"
os.environ.setdefault(HEALTH_DETAIL_ENV, "open")
LEAK_GRACE_ITERATIONS = 3  # loop iterations a task ending on its own gets to finish after the test
CANCELLED_GRACE_S = 1.0  # how long a task the test cancelled (and did not await) gets to finish


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker picks the ports it hands to servers (``free_port_block``) from a slice of WORKER_PORTS of its
    own, and so does every process it starts: two workers never race for one port, and no client socket takes a
    port between its pick and its server's bind."""
    config.addinivalue_line(
        "markers", "lab: needs network namespaces (root): several hosts on one machine (bridge/devkit/lab.py)"
    )
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... (set by xdist in each worker)
    if not worker.startswith("gw"):
        return
    config.pluginmanager.register(_GroupCheck(), "callbridge-group-check")
    index, count = int(worker[2:]), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    width = (WORKER_PORTS[1] - WORKER_PORTS[0] + 1) // max(count, 1)
    low = WORKER_PORTS[0] + index * width
    os.environ[PORT_RANGE_ENV] = f"{low}-{low + width - 1}"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the marks into the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a module- or class-scoped fixture (one real call that several tests check, a browser) joins
    its file's ``xdist_group``, so the fixture runs once, on one worker; a test with a group of its own keeps it
    (xdist would otherwise join the two names into a third group)."""
    for item in items:
        if item.get_closest_marker("xdist_group") is not None:
            continue
        info = getattr(item, "_fixtureinfo", None)
        definitions = info.name2fixturedefs.values() if info is not None else ()
        if any(d.scope in SHARED_SCOPES for defs in definitions for d in defs):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::", 1)[0]))


GROUPS_LOST: list[str] = []  # set in an xdist worker whose xdist_group marks had no effect


class _GroupCheck:
    """In an xdist worker with ``--dist loadgroup``, a grouped test's node id ends in ``@group``: that is how xdist
    keeps a group on one worker. With a pytest and pytest-xdist pair where it does not (pytest 9.2 derives the node
    id from a field xdist does not set), the groups would be spread silently and the timing-precise tests would
    share the CPU with the heavy ones: every test fails instead, saying why (``_groups_applied``)."""

    @pytest.hookimpl(trylast=True)  # after xdist's own hook
    def pytest_collection_modifyitems(self, config: pytest.Config, items: list[pytest.Item]) -> None:
        if not getattr(config.option, "loadgroup", False):
            return
        grouped = [item for item in items if item.get_closest_marker("xdist_group") is not None]
        if grouped and not any("@" in item.nodeid for item in grouped):
            GROUPS_LOST.append(
                f"xdist_group marks are not applied with pytest {pytest.__version__}: {grouped[0].nodeid} has no "
                "'@group' suffix (pyproject.toml pins a pytest that pytest-xdist supports)"
            )


@pytest.fixture(autouse=True)
def _groups_applied() -> None:
    if GROUPS_LOST:
        pytest.fail(GROUPS_LOST[0], pytrace=False)


@pytest.fixture(autouse=True)
def _no_leaked_tasks(request: pytest.FixtureRequest) -> None:
    """An async test fails if a task it started is still pending once it and its fixtures are done (the event
    loop's teardown would cancel it silently). Set up before the test's own fixtures, so checked after their
    teardown: a server fixture may own tasks until it closes."""
    if inspect.iscoroutinefunction(getattr(request.node, "obj", None)):
        request.getfixturevalue("_leaked_task_check")


@pytest.fixture
async def _leaked_task_check() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield

    def pending() -> set[asyncio.Task[Any]]:
        current = asyncio.current_task()
        return {task for task in asyncio.all_tasks() - before if task is not current}

    for _ in range(LEAK_GRACE_ITERATIONS):
        if not pending():
            return
        await asyncio.sleep(0)
    leaked = pending()
    if cancelled := [task for task in leaked if task.cancelling()]:  # on their way out: let them finish
        await asyncio.wait(cancelled, timeout=CANCELLED_GRACE_S)
        leaked = {task for task in leaked if not task.done()}
    if not leaked:
        return
    found = "\n".join(f"  {task.get_name()}: {task!r}" for task in sorted(leaked, key=asyncio.Task.get_name))
    for task in leaked:
        task.cancel()
    await asyncio.wait(leaked, timeout=CANCELLED_GRACE_S)
    pytest.fail(f"{len(leaked)} task(s) started by the test still pending after it:\n{found}", pytrace=False)


@pytest.fixture
async def emulator() -> AsyncIterator[EmulatorServer]:
    """An emulator on a free port, in-process: ``emulator.base_url`` (ws://.../v1), ``emulator.http_url``,
    ``emulator.sessions``. Per-test settings go in the URL query (``f"{emulator.base_url}?speed=0"``) or
    ``emulator.queue_next(settings=..., annotations=...)``."""
    async with EmulatorServer("127.0.0.1", 0) as server:
        yield server


class RealtimeOracle:
    """Validates events against the SDK models strictly: the union must accept the event AND no field may land in a
    model's ``extra`` (the SDK models accept unknown fields silently), except the documented allowances below."""

    # (dialect, event type, field path) patterns the service sends but the SDK 3.54 models do not declare.
    ALLOWED_EXTRAS = (
        ("*", "session.created", "session.object"),  # "realtime.session" on every session object
        ("*", "session.updated", "session.object"),
        ("*", "session.created", "session.expires_at"),
        ("*", "session.updated", "session.expires_at"),
        ("ga", "session.created", "session.id"),  # GA session models (RealtimeSessionCreateRequest) lack the id
        ("ga", "session.updated", "session.id"),
        ("ga", "response.output_audio_transcript.delta", "obfuscation"),  # GA deltas (docs/protocol.md)
        ("ga", "response.output_text.delta", "obfuscation"),
    )
    _adapters: ClassVar[dict[tuple[str, str], TypeAdapter[Any]]] = {}

    def _adapter(self, dialect: str, side: str) -> TypeAdapter[Any]:
        key = (dialect, side)
        if key not in self._adapters:
            union: Any = {
                ("ga", "server"): GAServerEvent,
                ("beta", "server"): BetaServerEvent,
                ("ga", "client"): GAClientEvent,
                ("beta", "client"): BetaClientEvent,
            }[key]
            self._adapters[key] = TypeAdapter(union)
        return self._adapters[key]

    def server_event(self, dialect: str, event: dict[str, Any]) -> BaseModel:
        return self._check(dialect, "server", event)

    def client_event(self, dialect: str, event: dict[str, Any]) -> BaseModel:
        return self._check(dialect, "client", event)

    def model(self, cls: Any, obj: Any, *, allowed_extras: tuple[str, ...] = ()) -> Any:
        """Any SDK model (e.g. a credential response), equally strict; ``allowed_extras``: field path patterns."""
        value = TypeAdapter(cls).validate_python(obj, strict=True)
        extras = [p for p in _extras(value, "") if not any(fnmatch.fnmatchcase(p, a) for a in allowed_extras)]
        assert not extras, f"{cls.__name__}: fields unknown to the SDK model: {extras}"
        return value

    def _check(self, dialect: str, side: str, event: dict[str, Any]) -> BaseModel:
        model = self._adapter(dialect, side).validate_python(event, strict=True)
        extras = [p for p in _extras(model, "") if not self._allowed(dialect, str(event.get("type")), p)]
        assert not extras, f"{dialect} {event.get('type')}: fields unknown to the SDK model: {extras}"
        assert isinstance(model, BaseModel)
        return model

    def _allowed(self, dialect: str, kind: str, path: str) -> bool:
        return any(
            fnmatch.fnmatchcase(dialect, d) and fnmatch.fnmatchcase(kind, k) and fnmatch.fnmatchcase(path, p)
            for d, k, p in self.ALLOWED_EXTRAS
        )


def _extras(value: Any, path: str) -> list[str]:
    if isinstance(value, BaseModel):
        out = [f"{path}.{k}".lstrip(".") for k in (value.model_extra or {})]
        for name in type(value).model_fields:
            out += _extras(getattr(value, name), f"{path}.{name}")
        return out
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _extras(v, f"{path}[{i}]")]
    return []


@pytest.fixture(scope="session")
def oracle() -> RealtimeOracle:
    return RealtimeOracle()


@pytest.fixture(params=["python", "c"])
def new_playout(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Makes a playout buffer, once per implementation: the test runs against the Python buffer and the C ring
    (bridge/native/playout.c), which keep one contract. The C run is skipped where the ring cannot be built."""
    from bridge.audio.playout import PlayoutBuffer
    from bridge.audio.playout_native import NativePlayout, native_playout

    if request.param == "python":
        return PlayoutBuffer
    lib = native_playout()
    if lib is None:
        pytest.skip("no C compiler: the playout ring in C is not built")

    def make(**kwargs: Any) -> NativePlayout:
        return NativePlayout(lib, **kwargs)

    return make


@pytest.fixture(scope="session")
def native_lib() -> ctypes.CDLL:
    """The native media port's library (bridge/native/cport.c): the package's, else built, and checked; the test is
    skipped where the package has none and there is no C compiler, and fails where the port's layout check fails."""
    from bridge.native import build
    from bridge.sip import cport

    available = cport.native_ports()
    if available.lib is None and build.compiler() is None:
        pytest.skip(
            f"no C compiler on PATH to build bridge/native/cport.c (./dev test installs gcc as root): {available.why}"
        )
    assert available.lib is not None, f"native port unavailable here: {available.why}"
    return available.lib
