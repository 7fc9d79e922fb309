"""A local OpenAI model service speaking every wire dialect (Realtime beta and GA, GPT-Live), for tests, the demo
and QA replays.

Layout (a sans-I/O core and a thin network shell, like python-websockets and h11):

* ``session.py``: :class:`EmulatorSession`, one Realtime connection's state machine: client text + time in,
  actions out; runs in virtual time with no sockets for fast replays.
* ``live.py``: :class:`LiveSession`, the same for a GPT-Live connection (continuous audio both ways, transcript
  deltas, commentary, a Responses backend for tools), from the Live dialect's tables.
* ``server.py``: :class:`EmulatorServer`, aiohttp app with the WebSocket, the credential endpoints and the control
  API on one port; :func:`serve` and :func:`main` for ``callbridge emulator`` / ``python -m bridge.emulator``.
* ``wire.py``: server-event builders; what differs between the dialects is data in each dialect's table
  (``dialect.service``, ``bridge/realtime/dialects/``), the same tables the bridge speaks from.
* ``config.py``: a session stored in its dialect's shape and read through a neutral view; what ``session.update``,
  ``response.create`` and items may hold is the dialect's schemas (``bridge/realtime/dialects/schema.py``, which
  also gives the service's error codes for everything else).
* ``vad.py`` (energy VAD), ``voice.py`` (reply audio), ``formats.py`` (pcm16 / G.711), ``annotations.py`` (call
  script turns), ``rules.py`` (what the model says, in every dialect), ``faults.py`` (settings and faults).
"""

from bridge.emulator.annotations import Annotations, Reply, ToolCall, Turn
from bridge.emulator.faults import Faults, Settings
from bridge.emulator.live import LiveSession
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
    "LiveSession",
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
