"""Helpers for the front-door tests: `callbridge serve` nodes on their own loopback addresses, the front's view of
its workers (over its control socket), SIPp runs, and raw INVITEs for single answers.

Nodes bind 127.0.0.2 and 127.0.0.3 (two machines, modelled on one); callers speak from 127.0.0.1 (or another loopback
address), so the front's address, the workers' and the callers' are all different. Processes are stopped by their
own pid, never by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.devkit.ports import can_bind, free_port_block
from bridge.emulator import EmulatorServer
from bridge.serve.front import kamailio_binary
from bridge.serve.front_rpc import DestinationState, destinations_of, rpc_call
from bridge.store.reportfile import read_reports

ROOT = Path(__file__).resolve().parents[3]
SCENARIOS = Path(__file__).with_name("scenarios")
SIPP = shutil.which("sipp")
PCAP_DIR = next(
    (d for d in (Path("/usr/share/sip-tester"), Path("/usr/share/doc/sip-tester/examples/pcap")) if d.is_dir()), None
)
NODE_A, NODE_B, CALLER = "127.0.0.2", "127.0.0.3", "127.0.0.1"
# Every node of a test shares one listen_key, as the nodes of a deployment must: a node's reaper opens the stored
# dialogs of another node's lost calls with it (bridge/store/dialogseal.py) to send their callers a BYE.
LISTEN_KEY = secrets.token_hex(32)
# The xdist group of the CPU-heavy tests (tests/conftest.py): a test that runs calls through pools of nodes takes it.
heavy = pytest.mark.xdist_group("cpu")


requirements = [
    pytest.mark.integration,
    pytest.mark.skipif(kamailio_binary() is None, reason="kamailio is not installed (apt-get install kamailio)"),
    pytest.mark.skipif(SIPP is None, reason="sipp is not installed (apt-get install sip-tester)"),
    pytest.mark.skipif(PCAP_DIR is None, reason="the sip-tester pcaps are not installed"),
    pytest.mark.skipif(not can_bind(NODE_B), reason="127.0.0.2/127.0.0.3 are not usable here"),
]


# Long tests get 300 s under pytest-timeout, when it is installed (the marker is unknown without it).
long_test = pytest.mark.timeout(300) if importlib.util.find_spec("pytest_timeout") else pytest.mark.integration


def port_block(count: int) -> int:
    """``count`` consecutive ports free on every loopback address the tests use (UDP and TCP)."""
    for _ in range(50):
        base = free_port_block(count)
        if all(_free(host, base + i) for host in (NODE_A, NODE_B) for i in range(count)):
            return base
    raise RuntimeError(f"no block of {count} free ports")


def _free(host: str, port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((host, port))
            t.bind((host, port))
        return True
    except OSError:
        return False


async def wait_for(check: Callable[[], Awaitable[Any]], what: str, within_s: float = 30.0, every_s: float = 0.2) -> Any:
    """Poll ``check`` until it returns something truthy; TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + within_s
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(every_s)
    raise TimeoutError(f"{what} (last: {last!r})")


def stop_process(proc: subprocess.Popen[Any], within_s: float = 25.0) -> int:
    """SIGTERM, then SIGKILL after ``within_s``; the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(within_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


# -- serve nodes ------------------------------------------------------------------------------------------------


class Node:
    """One `callbridge serve` process: ``workers`` workers on ``host``; with ``front`` also Kamailio on sip_port."""

    def __init__(
        self,
        tmp: Path,
        name: str,
        *,
        host: str,
        sip_port: int,
        workers: int,
        realtime_url: str,
        redis_url: str | None = None,
        front: bool = False,
        peers: Sequence[str] = (),
        trust: Sequence[str] = (),
        config: dict[str, Any] | None = None,
    ) -> None:
        self.name, self.host, self.sip_port, self.front = name, host, sip_port, front
        self.emulator: EmulatorServer | None = None  # the model service behind it, when front_node() started it
        self.http_port = free_port_block(1)
        self.reports = tmp / f"{name}.calls.jsonl"
        self.front_dir = tmp / f"{name}-front"
        self.stderr_path = tmp / f"{name}.stderr"
        args = [
            sys.executable, "-m", "bridge", "serve", "--workers", str(workers), "--sip-host", host,
            "--sip-port", str(sip_port), "--realtime-url", realtime_url, "--http-port", str(self.http_port),
            "--dialplans", str(ROOT / "dialplans"), "--report-file", str(self.reports),
        ]  # fmt: skip
        if redis_url:
            args += ["--redis-url", redis_url]
        if front:
            args += ["--front", "kamailio", "--front-dir", str(self.front_dir)]
        for peer in peers:
            args += ["--front-peer", peer]
        for cidr in trust:
            args += ["--trust-front", cidr]
        path = tmp / f"{name}.yaml"
        # the node's own address; the tests' callers are one trunk's many calls, unlimited unless a test says
        settings = {"http_host": host, "listen_key": LISTEN_KEY, "front_calls_per_source": 0, **(config or {})}
        path.write_text(json.dumps(settings))  # JSON is YAML
        args += ["--config", str(path)]
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "REDIS_URL")}
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        self._stderr = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=self._stderr)

    async def health(self) -> dict[str, Any]:
        try:
            async with aiohttp.ClientSession() as http, http.get(f"http://{self.host}:{self.http_port}/healthz") as r:
                return dict(await r.json())
        except (aiohttp.ClientError, OSError, ValueError):
            return {}

    async def up(self, within_s: float = 60.0) -> dict[str, Any]:
        async def ready() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"node {self.name} exited with {self.proc.returncode}: {self.stderr_tail()}")
            health = await self.health()
            workers = health.get("workers") or []
            if not workers or not all(w["alive"] and w["sip_port"] for w in workers):
                return None
            if self.front and not (health.get("front") or {}).get("alive"):
                return None
            return health

        health: dict[str, Any] = await wait_for(ready, f"node {self.name} up", within_s)
        return health

    async def metric(self, name: str, **labels: str) -> float | None:
        """One sample of the node's /metrics (merged over its processes), or None if absent."""
        async with aiohttp.ClientSession() as http, http.get(f"http://{self.host}:{self.http_port}/metrics") as r:
            text = await r.text()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    return float(sample.value)
        return None

    def worker_addresses(self, health: dict[str, Any]) -> list[str]:
        return [f"{self.host}:{w['sip_port']}" for w in health["workers"]]

    def states(self) -> dict[str, DestinationState]:
        """The front's view of every worker (this node must run the front)."""
        return {d.address: d for d in destinations_of(rpc_call(self.front_dir / "rpc.sock", "dispatcher.list"))}

    def calls(self) -> list[dict[str, Any]]:
        """One report per finished call (``worker`` = the index of the worker that held it)."""
        return read_reports(self.reports)

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int | None:
        rc = stop_process(self.proc)
        self._stderr.close()
        return rc


def dialogs(node: Node) -> list[dict[str, Any]]:
    """Kamailio's dialog table (dlg.list over the front's control socket)."""
    return list(rpc_call(node.front_dir / "rpc.sock", "dlg.list") or [])


async def no_dialog_left(node: Node) -> None:
    """Wait until the front holds no dialog (a BYE's dialog goes with its transaction, a few seconds after it)."""

    async def empty() -> bool:
        return not dialogs(node)

    try:
        await wait_for(empty, "the front's dialog table empty", within_s=30)
    except TimeoutError:
        left = [(d.get("call-id"), d.get("state")) for d in dialogs(node)]
        raise AssertionError(f"dialogs left at the front (call-id, state): {left}") from None
    log = (node.front_dir / "kamailio.log").read_text(errors="replace")
    assert "dlg_ontimeout" not in log and "dialog timeout" not in log.lower(), log[-3000:]


@contextlib.asynccontextmanager
async def front_node(
    tmp: Path, workers: int = 2, config: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Node, int, dict[str, Any]]]:
    """The emulator and one node: its front on NODE_A and ``workers`` workers behind it, up (``config``: more
    settings). Yields the node (``node.emulator``: the emulator), the front's port and the node's /healthz; stops
    the node after, and checks it exited 0 (unless the test failed)."""
    async with EmulatorServer("127.0.0.1", 0, speed=4) as emulator:
        port = port_block(workers + 1)
        node = Node(
            tmp, "a", host=NODE_A, sip_port=port, workers=workers, realtime_url=emulator.base_url, front=True,
            config=config,
        )  # fmt: skip
        node.emulator = emulator
        try:
            yield node, port, await node.up()
        except BaseException:
            print(f"the node's log, last lines:\n{node.stderr_tail(20000)}")  # in the failure's report (pytest)
            raise
        finally:
            rc = node.stop()
        assert rc == 0, node.stderr_tail()


def two_nodes(tmp: Path, realtime_url: str, redis_url: str) -> tuple[Node, Node, int]:
    """Node B (two workers on NODE_B) and node A (the front on NODE_A, its two workers and node B's), started in
    that order; returns (a, b, the front's port)."""
    a_port, b_port = port_block(3), port_block(2)
    node_b = Node(
        tmp, "b", host=NODE_B, sip_port=b_port, workers=2, realtime_url=realtime_url, redis_url=redis_url,
        trust=[NODE_A],
    )  # fmt: skip
    node_a = Node(
        tmp, "a", host=NODE_A, sip_port=a_port, workers=2, realtime_url=realtime_url, redis_url=redis_url,
        front=True, peers=[f"{NODE_B}:{b_port}", f"{NODE_B}:{b_port + 1}"],
    )  # fmt: skip
    return node_a, node_b, a_port


# -- SIPp --------------------------------------------------------------------------------------------------------


@dataclass
class SippRun:
    returncode: int
    successful: int
    failed: int
    output: str
    call_ids: list[str]


def sipp_dir(tmp: Path) -> Path:
    """A working directory holding pcap/ (SIPp's uac_pcap plays pcap/g711a.pcap relative to it)."""
    assert PCAP_DIR is not None
    work = tmp / "sipp"
    (work / "pcap").mkdir(parents=True, exist_ok=True)
    for name in ("g711a.pcap", "dtmf_2833_1.pcap"):
        shutil.copy(PCAP_DIR / name, work / "pcap" / name)
    for scenario in SCENARIOS.glob("*.xml"):
        shutil.copy(scenario, work / scenario.name)
    return work


async def sipp(
    work: Path,
    target: str,
    *,
    calls: int,
    scenario: str = "uac_pcap",
    local_host: str = CALLER,
    rate: int = 10,
    timeout_s: int = 60,
    extra: Sequence[str] = (),
) -> SippRun:
    """Run SIPp (a built-in scenario, or a scenario file copied into ``work``) for ``calls`` calls, all allowed at
    once; ``extra``: more SIPp arguments."""
    assert SIPP is not None
    tag = secrets.token_hex(3)
    script = ["-sn", scenario] if not scenario.endswith(".xml") else ["-sf", str(work / scenario)]
    proc = await asyncio.create_subprocess_exec(
        SIPP, *script, "-m", str(calls), "-l", str(calls), "-r", str(rate), "-i", local_host, "-mi", local_host,
        "-p", str(free_port_block(1)), "-mp", str(free_port_block(4 * calls + 4)), "-nostdin", "-timeout",
        str(timeout_s), "-timeout_error", "-trace_err", *extra, "-error_file", str(work / f"errors-{tag}.log"),
        "-trace_shortmsg", "-shortmessage_file", str(work / f"msgs-{tag}.log"), "-s", "2000", target,
        cwd=work, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s + 30)
    text = out.decode(errors="replace")
    errors = (work / f"errors-{tag}.log").read_text(errors="replace") if (work / f"errors-{tag}.log").exists() else ""
    shortmsgs = (work / f"msgs-{tag}.log").read_text(errors="replace") if (work / f"msgs-{tag}.log").exists() else ""
    call_ids = sorted({m for m in re.findall(r"\b(\d+-\d+@[\d.]+)\b", shortmsgs)})
    return SippRun(
        proc.returncode or 0, _counter(text, "Successful call"), _counter(text, "Failed call"), text + errors, call_ids
    )


def _counter(screen: str, name: str) -> int:
    found = re.findall(rf"{name}\s*\|\s*\d+\s*\|\s*(\d+)", screen)
    return int(found[-1]) if found else -1


# -- one raw INVITE ----------------------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    reason: str
    headers: dict[str, str]  # lower-case names, first occurrence
    bye: int | None = None  # the final status of the BYE, when invite() waited for it
    body: str = ""


async def invite(
    host: str,
    port: int,
    *,
    local_host: str = CALLER,
    headers: Sequence[str] = (),
    timeout_s: float = 10.0,
    bye_copies: int = 1,
    bye_headers: Sequence[str] = (),
    wait_bye: bool = False,
) -> Answer:
    """One INVITE over UDP; waits for the final answer, ACKs a failure, and ACKs then BYEs (without a Route
    header, like SIPp, but with ``bye_headers``) a success; ``bye_copies`` > 1 sends that BYE again at once
    (retransmissions: the same branch); ``wait_bye``: waits for the BYE's final answer too (``Answer.bye``).
    Returns the final answer."""
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((local_host, 0))
        sock.setblocking(False)
        lport = sock.getsockname()[1]
        call_id, tag, branch = secrets.token_hex(8), secrets.token_hex(4), "z9hG4bK" + secrets.token_hex(6)
        sdp = (
            f"v=0\r\no=- 1 1 IN IP4 {local_host}\r\ns=-\r\nc=IN IP4 {local_host}\r\nt=0 0\r\n"
            f"m=audio {lport + 2} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
        )
        uri = f"sip:2000@{host}:{port}"

        def request(
            method: str, cseq: int, br: str, to_tag: str = "", body: str = "", extra: Sequence[str] = ()
        ) -> bytes:
            lines = [
                f"{method} {uri} SIP/2.0",
                f"Via: SIP/2.0/UDP {local_host}:{lport};branch={br};rport",
                "Max-Forwards: 70",
                f"From: <sip:raw@{local_host}>;tag={tag}",
                f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
                f"Call-ID: {call_id}",
                f"CSeq: {cseq} {method}",
                f"Contact: <sip:raw@{local_host}:{lport}>",
                *extra,
            ]
            if body:
                lines.append("Content-Type: application/sdp")
            lines.append(f"Content-Length: {len(body)}")
            return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()

        async def final(method: str) -> Answer:
            deadline = time.monotonic() + timeout_s
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no final answer to {method} {call_id}")
                data = await asyncio.wait_for(loop.sock_recv(sock, 65535), left)
                found = parse_answer(data)
                if found is not None and found.status >= 200 and method in found.headers.get("cseq", ""):
                    return found

        sock.sendto(request("INVITE", 1, branch, body=sdp, extra=headers), (host, port))
        answer = await final("INVITE")
        to_tag = answer.headers.get("to", "").partition(";tag=")[2].split(";")[0]
        if answer.status >= 300:
            sock.sendto(request("ACK", 1, branch, to_tag), (host, port))
            return answer
        sock.sendto(request("ACK", 1, "z9hG4bK" + secrets.token_hex(6), to_tag), (host, port))
        bye = request("BYE", 2, "z9hG4bK" + secrets.token_hex(6), to_tag, extra=bye_headers)
        for _ in range(bye_copies):
            sock.sendto(bye, (host, port))
        if wait_bye:
            answer.bye = (await final("BYE")).status
        return answer


def parse_answer(data: bytes) -> Answer | None:
    """A SIP response's status, reason and headers (lower-case names, first occurrence); None for a request."""
    text = data.decode(errors="replace")
    head = text.split("\r\n\r\n", 1)[0].split("\r\n")
    parts = head[0].split(" ", 2)
    if parts[0] != "SIP/2.0" or len(parts) < 2 or not parts[1].isdigit():
        return None
    found: dict[str, str] = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        found.setdefault(name.strip().lower(), value.strip())
    return Answer(int(parts[1]), parts[2] if len(parts) > 2 else "", found, body=text.partition("\r\n\r\n")[2])
