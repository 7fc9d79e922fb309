"""The front's control socket (Kamailio's jsonrpcs module, datagram transport, ``rpc.sock`` of the run directory):
each worker's state in the dispatcher, drains (:func:`set_state`), and what the edge refused, read from Kamailio's
counters and exported as metrics (:class:`EdgeExport`)."""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import os
import secrets
import socket
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.serve.front_files import DISPATCHER_SET, FrontError

DRAINED, ACTIVE = "d", "ap"  # dispatcher.set_state's words: disabled (no calls, no probes); active and probed


def rpc_call(sock_path: Path, method: str, params: Sequence[Any] = (), timeout_s: float = 3.0) -> Any:
    """One JSON-RPC 2.0 call over Kamailio's Unix datagram control socket; returns ``result`` or raises FrontError."""
    reply_path = Path(tempfile.gettempdir()) / f"callbridge-rpc-{os.getpid()}-{secrets.token_hex(4)}.sock"
    request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": 1}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind(str(reply_path))  # Kamailio answers to the sender's address
            sock.settimeout(timeout_s)
            sock.sendto(json.dumps(request).encode(), str(sock_path))
            data = sock.recv(1 << 20)
        except (OSError, TimeoutError) as exc:
            raise FrontError(f"the front's control socket {sock_path} did not answer {method}: {exc}") from None
        finally:
            with contextlib.suppress(OSError):
                reply_path.unlink()
    try:
        reply = json.loads(data)
    except ValueError:
        raise FrontError(f"the front answered {method} with something that is not JSON") from None
    if "error" in reply:
        raise FrontError(f"the front refused {method}: {reply['error'].get('message', reply['error'])}")
    return reply.get("result")


class Dispatch(enum.StrEnum):
    """A destination's state in Kamailio's dispatcher: the first letter of its ``FLAGS`` in ``dispatcher.list``."""

    ACTIVE = "A"
    INACTIVE = "I"  # its probes go unanswered
    TRYING = "T"
    DRAINED = "D"  # disabled: no calls, no probes
    UNKNOWN = "?"  # a letter this module does not know

    @classmethod
    def _missing_(cls, value: object) -> Dispatch:
        return cls.UNKNOWN

    @property
    def word(self) -> str:
        """The metric's ``state`` label and the drain command's column."""
        return "unknown" if self is Dispatch.UNKNOWN else self.name.lower()


@dataclass(frozen=True, slots=True)
class DestinationState:
    """A worker in the front's dispatcher: its :class:`Dispatch` state, and its current call load against its
    cap."""

    address: str
    state: Dispatch
    probing: bool
    load: int
    max_calls: int

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "state": str(self.state)}


def destinations_of(result: Any) -> list[DestinationState]:
    """``dispatcher.list``'s result -> destination states (Kamailio 5.6 JSON shape)."""
    found: list[DestinationState] = []
    for record in (result or {}).get("RECORDS", []):
        if int(record.get("SET", {}).get("ID", DISPATCHER_SET)) != DISPATCHER_SET:
            continue  # the TLS set names the same workers again
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            attrs = dest.get("ATTRS", {}) or {}
            flags = str(dest.get("FLAGS", ""))
            found.append(
                DestinationState(
                    address=str(attrs.get("DUID") or str(dest.get("URI", "")).removeprefix("sip:")),
                    state=Dispatch(flags[:1]),
                    probing=flags[1:2] == "P",
                    load=int((dest.get("RUNTIME") or {}).get("DLGLOAD", 0)),
                    max_calls=int(attrs.get("MAXLOAD", 0)),
                )
            )
    return sorted(found, key=lambda d: d.address)


def _set_members(result: Any) -> list[tuple[int, str, str]]:
    """(set id, URI, duid) of every destination of every set: a drain applies to a worker's TLS entry too."""
    members: list[tuple[int, str, str]] = []
    for record in (result or {}).get("RECORDS", []):
        set_id = int(record.get("SET", {}).get("ID", DISPATCHER_SET))
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            uri = str(dest.get("URI", ""))
            members.append((set_id, uri, str((dest.get("ATTRS") or {}).get("DUID") or uri.removeprefix("sip:"))))
    return members


def matches(address: str, target: str) -> bool:
    """Does worker ``address`` ("host:port") belong to ``target``: the worker itself, its node ("host"), or "all"?"""
    if target == "all":
        return True
    host = address.rpartition(":")[0].strip("[]")
    return target in (address, host, f"[{host}]")


def set_state(sock_path: Path, target: str, state: str) -> list[DestinationState]:
    """Set every worker matching ``target`` to ``state``; returns the workers afterwards. Nothing matches: an error."""
    current = destinations_of(rpc_call(sock_path, "dispatcher.list"))
    chosen = [d for d in current if matches(d.address, target)]
    if not chosen:
        known = ", ".join(d.address for d in current) or "none"
        raise FrontError(f"no worker of the front matches {target!r} (workers: {known})")
    addresses = {dest.address for dest in chosen}
    for set_id, uri, duid in _set_members(rpc_call(sock_path, "dispatcher.list")):
        if duid in addresses:
            rpc_call(sock_path, "dispatcher.set_state", [state, set_id, uri])
    after = destinations_of(rpc_call(sock_path, "dispatcher.list"))
    return [d for d in after if matches(d.address, target)]


# -- what the edge refused (the counters module's group "front") ------------------------------------------------

# Kamailio's counter -> (the metric's name in bridge.metrics, its reason label or "")
EDGE_COUNTERS = {
    "refused_source": ("FRONT_REFUSED", "source"),
    "refused_credentials": ("FRONT_REFUSED", "credentials"),
    "challenged": ("FRONT_REFUSED", "challenged"),
    "refused_dialog": ("FRONT_REFUSED", "dialog"),
    "refused_dialog_source": ("FRONT_REFUSED", "dialog_source"),
    "refused_method": ("FRONT_REFUSED", "method"),
    "bans": ("FRONT_BANS", ""),
    "banned_dropped": ("FRONT_BANNED_DROPPED", ""),
    "full": ("FRONT_FULL", ""),
    "refused_slots": ("FRONT_REFUSED", "calls_per_source"),
    "refused_merged": ("FRONT_REFUSED", "merged"),
    "refused_too_large": ("FRONT_REFUSED", "too_large"),
    "closed_connections": ("FRONT_REFUSED", "connections_per_source"),
    "refused_user_locked": ("FRONT_REFUSED", "user_locked"),
    "user_locks": ("FRONT_USER_LOCKS", ""),
}


def edge_counts(result: Any) -> dict[str, int]:
    """``cnt.grp_get_all front``'s result (``{"front": {"bans": 1, ...}}``) -> the counters of EDGE_COUNTERS."""
    group = (result or {}).get("front", result) if isinstance(result, dict) else {}
    return {name: int(group.get(name, 0) or 0) for name in EDGE_COUNTERS} if isinstance(group, dict) else {}


class EdgeExport:
    """Kamailio's counters as Prometheus counters: each read adds what grew since the last (a restarted Kamailio
    starts from zero again, and then all it counted is new)."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.prime()

    @staticmethod
    def prime() -> None:
        """Every reason at zero from the start."""
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for metric_name, reason in EDGE_COUNTERS.values():
            if reason:
                getattr(metrics, metric_name).labels(reason)

    def update(self, counts: Mapping[str, int]) -> None:
        from bridge import metrics  # not at import: serve sets up multiprocess metrics first

        for name, value in counts.items():
            before = self.last.get(name, 0)
            grown = value - before if value >= before else value
            self.last[name] = value
            if grown <= 0:
                continue
            metric_name, reason = EDGE_COUNTERS[name]
            metric = getattr(metrics, metric_name)
            (metric.labels(reason) if reason else metric).inc(grown)
