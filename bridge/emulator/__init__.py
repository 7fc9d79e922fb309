"""A local OpenAI Realtime service speaking both wire dialects (beta and GA), for tests, the demo and QA replays.

Layout (a sans-I/O core and a thin network shell, like python-websockets and h11):

* ``session.py``: :class:`EmulatorSession`, one connection's state machine: client text + time in, actions out;
  runs in virtual time with no sockets for fast replays.
* ``server.py``: :class:`EmulatorServer`, aiohttp app with the WebSocket, the credential endpoints and the control
  API on one port; :func:`serve` and :func:`main` for ``callbridge emulator`` / ``python -m bridge.emulator``.
* ``wire.py``: server-event builders; what differs between the dialects is data in each dialect's table
  (``dialect.service``, ``bridge/realtime/dialects/``), the same tables the bridge speaks from.
* ``config.py``: a session stored in its dialect's shape and read through a neutral view; what ``session.update``,
  ``response.create`` and items may hold is the dialect's schemas (``bridge/realtime/dialects/schema.py``, which
  also gives the service's error codes for everything else).
* ``vad.py`` (energy VAD), ``voice.py`` (reply audio), ``formats.py`` (pcm16 / G.711), ``annotations.py`` (call
  script turns), ``faults.py`` (settings and faults).
"""

from bridge.emulator.annotations import Annotations, Reply, ToolCall, Turn
from bridge.emulator.faults import Faults, Settings
from bridge.emulator.server import EmulatorServer, main, serve
from bridge.emulator.session import Abort, Action, Close, EmulatorSession, Send, SendRaw, SessionRecord

__all__ = [
    "Abort",
    "Action",
    "Annotations",
    "Close",
    "EmulatorServer",
    "EmulatorSession",
    "Faults",
    "Reply",
    "Send",
    "SendRaw",
    "SessionRecord",
    "Settings",
    "ToolCall",
    "Turn",
    "main",
    "serve",
]
