"""The preloaded parent's refusals (bridge/serve/zygote.py): a fork copies only the calling thread, so a parent with
a second thread must not fork workers; orphans are collected only once seen twice, and never one that is kept."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from bridge.serve.zygote import Zygote, reap_orphans

ALONE = "from bridge.serve.zygote import unsafe_to_fork; print(repr(unsafe_to_fork()))"
THREADED = (
    "import threading; from bridge.serve.zygote import unsafe_to_fork; e = threading.Event(); "
    "threading.Thread(target=e.wait, daemon=True).start(); print(repr(unsafe_to_fork())); e.set()"
)


def _said(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def test_a_single_threaded_process_may_fork_and_a_threaded_one_may_not() -> None:
    assert _said(ALONE) == "''"
    assert "2 threads (2 Python threads) after the imports" in _said(THREADED)


def test_a_replaced_worker_older_than_the_parent_keeps_it_and_a_younger_one_renews_it() -> None:
    zygote = Zygote()
    zygote.started_at = 100.0
    zygote.renew_before(50.0)  # the worker started before this parent: the parent is newer than its code
    assert not zygote._stale
    zygote.renew_before(150.0)  # forked from this parent: a new one loads the installed code
    assert zygote._stale


def test_a_zombie_is_collected_on_its_second_sighting_unless_kept() -> None:
    kept = subprocess.Popen([sys.executable, "-c", "pass"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    for proc in (kept, gone):  # both exited, neither collected: zombies
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
    first = reap_orphans(set(), {kept.pid})
    assert {kept.pid, gone.pid} <= first and _state(gone.pid) == "Z"  # seen once: left alone
    reap_orphans(first, {kept.pid})
    assert _state(gone.pid) is None and _state(kept.pid) == "Z"
    assert kept.wait() == 0


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


PRELOADED = (
    "import sys; from bridge.serve.zygote import preload; modules, unsafe = preload(); "
    "print(repr(unsafe), sorted({m.split('.')[0] for m in sys.modules if m.startswith(('mcp', 'aiohttp.web', "
    "'bridge.supervisor.http', 'bridge.runtime.tracing', 'opentelemetry.exporter'))}), "
    "all(m in sys.modules for m in ('numpy.random', 'numpy.fft', 'bridge.cli')))"
)


def test_the_parent_loads_what_workers_run_and_not_the_console_or_the_mcp_sdk() -> None:
    """What a worker imports lazily is loaded once in the parent; the supervisor's web stack, the MCP SDK (about
    35 MB a process, which no worker without MCP servers runs) and the traces' modules with the OTLP exporter (an
    optional extra, for ``tracing: otlp`` only) are not, and the warm-up leaves one thread."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # as the pool starts it
    done = subprocess.run([sys.executable, "-c", PRELOADED], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "'' [] True"


@pytest.mark.skipif(importlib.util.find_spec("opentelemetry.sdk") is None, reason="no [otel] extra installed")
def test_with_tracing_on_the_parent_loads_the_traces_modules_too() -> None:
    code = (
        "import sys; from bridge.serve.zygote import TRACING_MODULES, preload; preload(TRACING_MODULES); "
        "print(all(m in sys.modules for m in (*TRACING_MODULES, 'opentelemetry.sdk.trace')))"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "True"


def test_a_plan_with_mcp_servers_gets_a_parent_that_loads_the_sdk() -> None:
    from types import SimpleNamespace

    from bridge.tools.mcp import sdk_needed

    assert sdk_needed([SimpleNamespace(mcp_servers=())]) == ()
    zygote = Zygote()
    zygote.want(sdk_needed([SimpleNamespace(mcp_servers=()), SimpleNamespace(mcp_servers=("crm",))]))
    assert zygote.also == ("mcp",) and zygote._stale  # the next fork starts a parent run with --also mcp
    zygote._stale = False
    zygote.want(("mcp",))
    assert not zygote._stale  # the same modules: the running parent stays
