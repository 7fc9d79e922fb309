"""Secrets out of sight of other processes: taken out of this process's environment once read, and blanked in the
kernel's copy of its start-up arguments and environment (what ``/proc/<pid>/cmdline`` and ``environ`` show).

A worker gets its settings (secrets included) through an inherited pipe (:func:`send_through_pipe`,
:func:`read_from_fd`): never in its command line or environment.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable
from pathlib import Path

_MIN_SECRET = 4  # shorter values are not blanked: they would match harmless bytes


def without_secrets(env: dict[str, str], names: Iterable[str]) -> dict[str, str]:
    """``env`` without the variables ``names`` (the secret ones, ``bridge.config.secret_variables``): what a child
    process may inherit."""
    dropped = set(names)
    return {k: v for k, v in env.items() if k not in dropped}


def forget_environment(values: Iterable[str], names: Iterable[str]) -> int:
    """Drop the variables ``names`` (the secret ones, ``bridge.config.secret_variables``) from ``os.environ`` and
    overwrite each of ``values`` (and the dropped variables' values) with ``*`` wherever it appears in this
    process's start-up argument and environment block. Returns the number of places blanked (0 where ``/proc`` is
    not there)."""
    secrets = {v for v in values if v and len(v) >= _MIN_SECRET}
    for name in set(names):
        value = os.environ.pop(name, None)
        if value and len(value) >= _MIN_SECRET:
            secrets.add(value)
    return sum(_blank(start, end, secrets) for start, end in _start_blocks())


def _start_blocks() -> list[tuple[int, int]]:
    """The address ranges of the process's original argv and environ (``/proc/self/stat`` fields 48 to 51)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        arg_start, arg_end, env_start, env_end = (int(f) for f in fields[45:49])
    except (OSError, IndexError, ValueError):
        return []
    return [(arg_start, arg_end), (env_start, env_end)]


def _blank(start: int, end: int, secrets: set[str]) -> int:
    if not 0 < start < end:
        return 0
    block = ctypes.string_at(start, end - start)
    count = 0
    for secret in secrets:
        raw = secret.encode()
        at = block.find(raw)
        while at >= 0:
            ctypes.memset(start + at, ord("*"), len(raw))
            count += 1
            at = block.find(raw, at + len(raw))
    return count


def send_through_pipe(payload: bytes) -> int:
    """A pipe holding ``payload`` (closed for writing): its read end, for a child to inherit (``pass_fds``)."""
    read_end, write_end = os.pipe()
    try:
        view = memoryview(payload)
        while view:  # settings are a few kB: within the pipe's buffer, so this never waits for the reader
            view = view[os.write(write_end, view) :]
    finally:
        os.close(write_end)
    return read_end


def read_from_fd(fd: int) -> bytes:
    """Everything in the inherited descriptor ``fd``, which is closed after."""
    with os.fdopen(fd, "rb") as stream:
        return stream.read()
