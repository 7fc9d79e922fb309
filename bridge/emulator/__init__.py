"""A local OpenAI model service speaking every wire dialect (Realtime beta and GA, GPT-Live), for tests, the demo
and QA replays.

Layout (a sans-I/O core and a thin network shell, like python-websockets and h11):

* ``core.py``: :class:`~bridge.emulator.core.SessionCore`, the calling convention every session shares (client
  text + time in, ``actions.py`` out), its timers, the check of client events, injected faults, and the caller's
  audio as appends bring it; ``record.py``: what a session records, and its recording to disk.
* ``state.py``: each session kind's one state (a dataclass) that the session owns and hands to its rooms; a room
  works on it and returns what the session does next, so no room holds the session or reaches another through it.
* ``session.py``: :class:`EmulatorSession`, one Realtime connection; its rooms: ``turns.py`` (input audio, VAD,
  commits, transcription, when the idle timeout falls), ``conversation.py`` (items), ``replies.py`` (what a response
  says) and ``responses.py`` (responses laid out and paced in time).
* ``live.py``: :class:`LiveSession`, the same for a GPT-Live connection; its rooms: ``live_speech.py`` (the
  continuous output stream) and ``live_backend.py`` (the Responses delegation that calls tools).
* ``scheduler.py``: the response scheduler both sessions' output rests on (numbering, latency, audio cut into
  deltas with their words, per-delta faults, the record of each response).
* ``server.py``: :class:`EmulatorServer`, aiohttp app with the WebSocket, the credential endpoints and the control
  API on one port; :func:`serve` and :func:`main` for ``callbridge emulator`` / ``python -m bridge.emulator``;
  its rooms: ``websocket.py`` (each connection's loop), ``http_api.py`` (credentials, control API) and
  ``grader.py`` (``POST /v1/responses``: the replay's grader, judged by a deterministic rule).
* ``wire.py``: server-event builders (the one ``error`` builder included); what differs between the dialects is
  data in each dialect's table (``dialect.service``, ``bridge/realtime/dialects/``), the same tables the bridge
  speaks from.
* ``config.py``: a session stored in its dialect's shape and read through a neutral view; what ``session.update``,
  ``response.create`` and items may hold is the dialect's schemas (``bridge/realtime/dialects/schema.py``, which
  also gives the service's error codes for everything else).
* ``voice.py`` (reply audio), ``formats.py`` (pcm16 / G.711), ``annotations.py`` (call script turns),
  ``rules.py`` (what the model says, in every dialect), ``faults.py`` (settings and faults), ``postcall.py`` (the
  answer to a post-call question, made from the conversation), ``fastread.py`` (client frames straight from
  aiohttp's parser, without a task wake-up per frame), ``__main__.py`` (``python -m bridge.emulator``).
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
