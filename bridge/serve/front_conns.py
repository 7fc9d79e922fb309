"""How many TCP and TLS connections one source address may hold at the front (kamailio/kamailio.cfg, route[TCPCLOSE];
the other connection limits are :class:`~bridge.serve.front_edge.Conns`).

Kamailio 5.6 has no limit per source: :class:`Warden` reads the kernel's table of TCP sockets (``/proc/net/tcp``,
``/proc/net/tcp6``) a few times a second, and names each connection of a source over its limit (the newest first
beyond the oldest ``per_source``) to Kamailio's ``htable`` "tcpclose" over the control socket; a timer route of the
script closes them within 100 ms. Workers, the front's own address and the listed trunks (``sip_trunk_sources``)
have no limit."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from bridge.serve.front_files import FrontError
from bridge.serve.front_rpc import rpc_call

log = logging.getLogger("bridge.serve.front")

CHECK_S = 0.25  # the warden reads the socket table this often
ESTABLISHED = "01"


# -- the kernel's socket table ----------------------------------------------------------------------------------


def _address(hex_address: str) -> tuple[str, int]:
    """``/proc/net/tcp``'s ``0100007F:13C4`` (or its IPv6 form) -> ("127.0.0.1", 5060)."""
    host, _, port = hex_address.partition(":")
    raw = bytes.fromhex(host)
    # the kernel prints each 32-bit word in host (little-endian) order
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    ip = ipaddress.ip_address(packed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip), int(port, 16)


def connections(table: str, ports: Iterable[int]) -> list[tuple[str, int, int]]:
    """The established connections to one of ``ports`` in a ``/proc/net/tcp`` (or ``tcp6``) text: (the peer's
    address, its port, the socket's inode), oldest first as far as inode numbers tell."""
    wanted = set(ports)
    found = []
    for line in table.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != ESTABLISHED:
            continue
        try:
            _local, local_port = _address(fields[1])
            peer, peer_port = _address(fields[2])
            inode = int(fields[9])
        except ValueError:
            continue
        if local_port in wanted:
            found.append((peer, peer_port, inode))
    return sorted(found, key=lambda c: c[2])


def over_limit(conns: Sequence[tuple[str, int, int]], per_source: int, exempt: Sequence[str]) -> dict[str, list[str]]:
    """Per source over ``per_source`` connections (and not in ``exempt``, CIDRs): the ``ip:port`` (``[v6]:port``)
    of each connection beyond its oldest ``per_source``."""
    networks = [ipaddress.ip_network(cidr, strict=False) for cidr in exempt]
    by_source: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for peer, port, inode in conns:
        by_source[peer].append((inode, port))
    excess = {}
    for peer, held in by_source.items():
        if len(held) <= per_source:
            continue
        ip = ipaddress.ip_address(peer)
        if any(ip in net for net in networks):
            continue
        host = f"[{peer}]" if ip.version == 6 else peer
        excess[peer] = [f"{host}:{port}" for _, port in sorted(held)[per_source:]]
    return excess


class Warden:
    """Closes the connections of a source over ``per_source`` (see the module's doc)."""

    def __init__(self, rpc_socket: Path, ports: Sequence[int], per_source: int, exempt: Sequence[str]) -> None:
        self.rpc_socket = rpc_socket
        self.ports = tuple(ports)
        self.per_source = per_source
        self.exempt = tuple(exempt)

    def check(self) -> dict[str, list[str]]:
        """One look at the socket table; each connection over its source's limit named to Kamailio to close."""
        table = ""
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                table += Path(name).read_text(encoding="ascii", errors="replace")
            except OSError:
                continue
        excess = over_limit(connections(table, self.ports), self.per_source, self.exempt)
        for addresses in excess.values():
            for address in addresses:
                rpc_call(self.rpc_socket, "htable.sets", ["tcpclose", address, "1"])
        return excess

    async def run(self) -> None:
        said: set[str] = set()
        while True:
            try:
                excess = await asyncio.to_thread(self.check)
            except FrontError as exc:
                log.debug("front connections: %s", exc)
                excess = {}
            for source, addresses in excess.items():
                if source not in said:  # once per source and start: the counter says how often
                    said.add(source)
                    log.warning(
                        "front: %s holds over %d TCP/TLS connections (front_connections_per_source): %d closed",
                        source,
                        self.per_source,
                        len(addresses),
                    )
            await asyncio.sleep(CHECK_S)
