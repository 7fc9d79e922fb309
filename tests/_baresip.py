"""baresip (Debian's package ``baresip``) as a caller the project did not write: its own SIP stack (libre), its own
RTP, jitter buffer and SDP, on the options a user keeps. Audio comes from a WAV file (its ``aufile`` source); what it
hears is written by its ``sndfile`` filter (decoded, 8 kHz for G.711, 16 kHz for G.722: its ``g722`` module is
loaded when ``codecs`` names it). The test drives it over ``ctrl_tcp``: JSON in
netstrings, each command answered with its token, and the call's events (``CALL_ESTABLISHED``, ``CALL_CLOSED``...)
pushed as they happen.

Only the audio devices and ports are set: no local address is forced, so on a host with more than one address it
announces its default one in SDP, as a user's softphone does. baresip hangs up a call whose audio file has ended
("audio error: end of file"): give it a file that outlasts the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from bridge.devkit.ports import free_port_block

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
SKIP_REASON = "baresip is not installed (apt-get install baresip; ./dev test installs it as root)"
WITHIN_S = 20.0  # a command's answer, the control port at start, the exit after "quit"


class Baresip:
    """One baresip process in ``work`` (its configuration, log and audio dumps), playing ``play`` into its calls."""

    def __init__(self, work: Path, play: Path, *, host: str = "127.0.0.1", codecs: Sequence[str] = ()) -> None:
        self.work, self.play, self.host = work, play, host
        self.config_dir, self.dumps, self.log = work / "baresip", work / "baresip-audio", work / "baresip.log"
        # SIP on UDP and TCP takes sip_listen's port, SIP over TLS the next one (libre's default)
        base = free_port_block(14)
        self.sip_port, self.ctrl_port, self.rtp_ports = base, base + 2, (base + 4, base + 13)
        self.codecs = list(codecs)
        self.events: list[dict[str, Any]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self._answers: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._changed = asyncio.Event()
        self._tokens = 0

    def _configure(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.dumps.mkdir(parents=True, exist_ok=True)
        wideband = ["g722"] if any(codec.upper().startswith("G722") for codec in self.codecs) else []
        modules = ["g711", *wideband, "aufile", "aubridge", "sndfile", "account", "menu", "ctrl_tcp"]
        lines = [
            "poll_method epoll",
            f"sip_listen {self.host}:{self.sip_port}",
            f"rtp_ports {self.rtp_ports[0]}-{self.rtp_ports[1]}",
            f"audio_source aufile,{self.play}",
            "audio_player aubridge,nowhere",  # nothing plays it: sndfile keeps what was heard
            "audio_alert aubridge,nowhere",
            f"snd_path {self.dumps}",
            f"ctrl_tcp_listen 127.0.0.1:{self.ctrl_port}",
            f"module_path {MODULES}",
            *(f"module {name}.so" for name in modules),
        ]
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")
        # no registrar; the codecs it offers are the account's (baresip 1.0 has no global list)
        offer = f";audio_codecs={','.join(self.codecs)}" if self.codecs else ""
        (self.config_dir / "accounts").write_text(f"<sip:baresip@{self.host}>;regint=0{offer}\n")
        (self.config_dir / "contacts").write_text("")

    async def __aenter__(self) -> Baresip:
        assert BARESIP is not None, SKIP_REASON
        self._configure()
        with self.log.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                BARESIP, "-f", str(self.config_dir), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WITHIN_S
        while True:
            if self._proc.returncode is not None:
                raise RuntimeError(f"baresip exited with {self._proc.returncode}: {self.log_tail()}")
            try:
                self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.ctrl_port)
                break
            except OSError:
                if loop.time() > deadline:
                    raise TimeoutError(f"baresip's control port did not open: {self.log_tail()}") from None
                await asyncio.sleep(0.1)
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._proc is not None
        with contextlib.suppress(Exception):
            await self.command("quit")
        try:
            await asyncio.wait_for(self._proc.wait(), WITHIN_S)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()

    async def _read(self) -> None:
        """Netstrings (``LEN:JSON,``) from the control port: answers to their commands, events to ``events``."""
        assert self._reader is not None
        try:
            while True:
                length = int((await self._reader.readuntil(b":"))[:-1])
                message = json.loads(await self._reader.readexactly(length))
                await self._reader.readexactly(1)  # the netstring's ","
                if message.get("response"):
                    answer = self._answers.pop(str(message.get("token")), None)
                    if answer is not None and not answer.done():
                        answer.set_result(message)
                elif message.get("event"):
                    self.events.append(message)
                    self._changed.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            self._changed.set()

    async def command(self, name: str, params: str = "") -> dict[str, Any]:
        """Run one of baresip's commands (``dial``, ``hangup``, ``quit``...) and return its answer."""
        assert self._writer is not None
        self._tokens += 1
        token = str(self._tokens)
        answer = asyncio.get_running_loop().create_future()
        self._answers[token] = answer
        body = json.dumps({"command": name, "params": params, "token": token}).encode()
        self._writer.write(str(len(body)).encode() + b":" + body + b",")
        await self._writer.drain()
        return dict(await asyncio.wait_for(answer, WITHIN_S))

    async def event(self, kind: str, within_s: float = WITHIN_S) -> dict[str, Any]:
        """The first event of ``kind`` (``CALL_ESTABLISHED``, ``CALL_CLOSED``...), once it has come."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while True:
            for event in self.events:
                if event.get("type") == kind:
                    return event
            if self._task is not None and self._task.done():
                raise RuntimeError(f"baresip's control connection closed before {kind}: {self.log_tail()}")
            self._changed.clear()
            left = deadline - loop.time()
            if left <= 0:
                seen = [e.get("type") for e in self.events]
                raise TimeoutError(f"no {kind} from baresip within {within_s} s (seen {seen}): {self.log_tail()}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def heard(self) -> bytes:
        """What baresip decoded from its call (PCM16, mono, at the codec's rate), read from the ``sndfile`` dump."""
        (dump,) = sorted(self.dumps.glob("*-dec.wav"))
        data = dump.read_bytes()
        start = data.index(b"data") + 8  # the header's sizes are written when the file is closed; read to the end
        return data[start : start + (len(data) - start) // 2 * 2]

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""
