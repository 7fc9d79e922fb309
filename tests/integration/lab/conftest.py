"""The lab's tests need network namespaces (root, ``ip netns add``) and the real parts: Kamailio with db_redis,
redis-server and redis-sentinel. Where any is missing, every lab test is skipped with one reason (one line of
``-rs``, since it is raised by this hook, not by a fixture, whose skips pytest reports at each test): the check is
made once per session."""

from __future__ import annotations

import functools
import shutil

import pytest

from bridge.devkit.lab import unavailable
from bridge.serve.front import kamailio_binary
from bridge.serve.front_dialogs import has_db_redis


@functools.cache
def _missing() -> str | None:
    if reason := unavailable():
        return f"the lab: {reason}"
    tools = {
        "kamailio (apt-get install kamailio)": kamailio_binary(),
        "Kamailio's db_redis (kamailio-redis-modules)": has_db_redis() or None,
        "redis-server": shutil.which("redis-server"),
        "redis-sentinel": shutil.which("redis-sentinel"),
    }
    if absent := [name for name, found in tools.items() if not found]:
        return "the lab: not installed: " + ", ".join(absent)
    return None


@pytest.hookimpl(tryfirst=True)  # before the module's lab is started
def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("lab") is not None and (reason := _missing()):
        pytest.skip(reason)
