"""A stand-in for Kamailio's control socket: the dispatcher's jsonrpcs answers, without Kamailio."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any


def _listing(states: dict[str, str], loads: dict[str, int]) -> dict[str, Any]:
    return {
        "NRSETS": 1,
        "RECORDS": [
            {
                "SET": {
                    "ID": 1,
                    "TARGETS": [
                        {
                            "DEST": {
                                "URI": f"sip:{address}",
                                "FLAGS": flags,
                                "ATTRS": {"DUID": address, "MAXLOAD": 4},
                                "RUNTIME": {"DLGLOAD": loads.get(address, 0)},
                            }
                        }
                        for address, flags in states.items()
                    ],
                }
            }
        ],
    }


class FakeKamailio:
    """A Unix datagram socket that answers dispatcher.list / dispatcher.set_state as Kamailio's jsonrpcs does."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.states = {"127.0.0.2:5061": "AP", "127.0.0.2:5062": "AP", "127.0.0.3:5061": "IP"}
        self.calls: list[tuple[str, list[Any]]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                data, sender = self.sock.recvfrom(65535)
            except OSError:
                return
            request = json.loads(data)
            method, params = request["method"], request["params"]
            self.calls.append((method, params))
            if method == "dispatcher.list":
                reply: dict[str, Any] = {"result": _listing(self.states, {"127.0.0.2:5061": 3})}
            elif method == "dispatcher.set_state" and params[2].removeprefix("sip:") in self.states:
                self.states[params[2].removeprefix("sip:")] = params[0].upper()[:1] + (
                    "P" if params[0].endswith("p") else "X"
                )
                reply = {"result": "Ok. Dispatcher state updated."}
            else:
                reply = {"error": {"code": 500, "message": "State Update Failed"}}
            self.sock.sendto(json.dumps({"jsonrpc": "2.0", "id": request["id"], **reply}).encode(), sender)

    def close(self) -> None:
        self.sock.close()
