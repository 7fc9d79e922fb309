"""``callbridge bench calls [--json] [--max-calls N] [--seconds S]``: concurrent real calls, against a ceiling.

Two paths carry the same load, step by step (4, 8, ... ``--max-calls`` concurrent calls, ``--seconds`` each):

- ``bridge``: ``Pool`` workers (``ceil(calls / 4)`` processes, 4 calls each: the wheel's cap) bridging every call
  to the in-process Realtime emulator (GA, PCM 24 kHz, no turn detection so both directions run all the time:
  the caller talks without pause, the agent speaks one long greeting, delivered at twice real time).
- ``ceiling``: pjsua2's own C path. A tiny pjsua2 app per 4 calls answers and loops each call's audio back to
  itself in the conference bridge (``AudioMedia.startTransmit`` to itself): no Python media port at all.
  ``--ceiling play`` instead plays a looped recording (C) to each call and sends the call's audio to the null
  sound device: what a loopback sends is what it received, so a stall on the caller's side reaches the caller's
  jitter buffer twice, while the bridge's reply does not depend on the caller's packets; ``play`` removes that
  difference. ``--ceiling stream`` loops each call back and also sends its audio to a socket (a sink in the
  bench's process) as a worker sends it to the model: the bridge's own native port and C uplink upsample, frame
  and write each frame on pjmedia's clock thread, with no Python per frame. It is what the model I/O costs at
  least; the bench checks that the sink got every call's appends. ``--ceiling duplex`` streams each call's audio up
  so and plays the model's audio back as a worker does, all in C: the sink sends GA audio deltas (a 440 Hz tone, at
  real-time pace) on the same socket, and the port's downlink reads, decodes and downsamples them on the clock
  thread into the call's playout (the call is not looped back); the bench checks that the sink got every call's
  appends and that every caller heard the tone. ``--ceiling equal`` is the equal-work floor: the duplex floor doing a
  worker's work too, the plan's C echo guard on every call where a worker's runs (each caller frame heard and
  tempered on the clock thread before it is sent, each frame played fed as its reference) and the model's audio at
  the emulator's pace for the workers (the whole greeting at twice real time, held in the call's playout). It
  prints its guards' counters (frames tempered, path searches) and fails a step whose guards tempered nothing.
  ``--ceiling loop,stream,duplex,equal`` runs several kinds in one run (the first is the ``ceiling`` path, each
  other a path of its own name); the summary then gives each kind's CPU per call beside the workers', the duplex
  floor against the plain loopback (goal: at most 2.2x) and the workers against the equal-work floor (goal: at most
  1.10x) and the duplex floor (goal: at most 1.25x). ``--every-step`` keeps every path on every step after a
  failure.

The load callers are the same for both: ``ceil(calls / 4)`` pjsua2 processes, each placing 4 calls that play a
looped speech WAV through an ``AudioMediaPlayer`` (C, no Python on the media path). Every process involved runs on
this machine, loaded together.

A step boots the load callers first and waits until every one is up (a Python + pjsua2 process costs about a
CPU-second to boot); then all of them place their calls at once, and the window opens ``SETUP_S`` later, for both
paths alike (the same window for every process: CLOCK_MONOTONIC is system-wide). A call not up by then is
missing for the whole window: answering a burst of calls in time is part of the capacity. Measured over it:

- ``late or missing`` (outbound, at the callers): per call, the frames that were not there when the caller's
  20 ms clock wanted them, from its jitter buffer (``Call.getStreamStat``): a late packet counts once although it
  moves both the ``empty`` and the ``lost`` counter (calibrated by stopping the sender: 15 late frames moved them by
  12 and 18), plus discarded frames, plus every frame of a call that was not up. For ``bridge``, plus the
  workers' playout underruns inside the window: dead air inside an answer reaches the caller as a frame on time,
  but a silent one, so it is a missing frame too (the ``underrun`` column: whole calls / in the window; most
  fall while a reply's first deltas arrive, before the window).
- ``in missing`` (bridge only, at the model): 50 appends per second and call are expected in the window; the ones
  that did not reach the emulator are missing.
- The pass mark is < 0.1 % of the expected frames in each direction, every call answered.
- ``cpu/call``: user + system CPU of the worker (or loopback) processes over the window (``/proc/<pid>/stat``),
  per call, in % of one core. ``callers``: all load callers together; ``bench``: this process, i.e. the emulator
  (bridge path only); ``machine``: every process, in % of all cores. The bridge path also carries the
  emulator on the same cores; the ceiling path has nothing in place of it.
- Bridge-added latency from the worker reports (sampled once a second per call): inbound = ``capture`` (clock
  thread -> event loop, conversion, queued for the socket; with the uplink offload, all on the clock thread:
  its callback -> the socket write) + ``uplink`` (socket write); outbound = ``downlink``
  (decode + resample of a reply's first delta) + ``playback`` (queued -> handed to the clock thread). Also the
  spread of append arrival times at the emulator (arrival minus the frame's 20 ms slot, above the call's best).

``--front kamailio`` adds a third path, ``front``: the bridge path's workers behind Kamailio (``serve --front
kamailio``, bridge/serve/front.py), every call placed to the front's one address instead of a worker's port. It
runs in the same ladder as the bridge path, against the same kind of workers, and reports what the front costs:
``front cpu/call``, the CPU time all Kamailio's processes used over the step (every INVITE, ACK and BYE, and the
OPTIONS probes meanwhile) per call, and every path's ``setup``, from the caller's INVITE to its call being up
(p50/p99). The summary compares the front's capacity with the bridge
path's (goal: >= 90 %) and the set-up time it adds (front minus bridge at the same step). With ``--front`` the
bridge path gives the calls of each load caller (four, on one pjmedia clock) to four different workers, as the
front's dispatcher does: a worker's calls then come on four clock phases, as a trunk's calls would, which costs
the workers and the callers more than four calls on one phase (docs/benchmarks.md, "Through the front"). Without
it each load caller's calls go to one worker.

``--srtp`` adds a path, ``srtp``: the bridge path with every call's media encrypted (the workers' ``srtp:
mandatory``, the load callers offering SDES, AES_CM_128_HMAC_SHA1_80), run right after the plain one at each step.
Its calls are ``sips:`` calls over TLS, as SDES needs (the workers refuse keys sent in the clear with 488): each
worker listens on TLS too, with a certificate for 127.0.0.1 made in the bench's work directory, which the callers
verify. The TLS handshakes, INVITEs and BYEs fall outside the window; inside it, only the media differs. The
summary gives the workers' CPU per call with SRTP against plain RTP at the largest step both passed (goal: at most
10 % more). A call that ran plain RTP on the SRTP path counts as unanswered.

``--model-tls`` adds a path, ``model_tls``: the bridge path with the model reached over TLS (``wss://``), as
OpenAI is: a second emulator serves TLS with a self-signed certificate made in the bench's work directory, which the
step's workers trust (``SSL_CERT_FILE``). The summary gives the workers' CPU per call and the inbound p99 against the
plain ``ws://`` path's at the largest step both answered in full (goal: at most 10 % more).

``--otel`` adds a path, ``otel``: the bridge path with every call traced (``tracing: otlp``, ``OTEL_TRACES_SAMPLER=
always_on``: sampling 100 %), its spans exported over OTLP/HTTP to a local receiver in the bench's process
(bench/calls/otlp.py), which counts what it got. The summary gives the workers' CPU per call traced against the
untraced bridge path's at the largest step both answered in full (goal: at most 1.05x), and the exports and spans
the receiver got (a step's spans are exported by the end of its workers, after the window).

``echo_off`` (skipped with ``--no-echo-off``) runs right after the bridge path at each step: the same plan with
``echo_guard: {enabled: false}`` (the bridge path runs the plan's defaults, the guard on). The summary gives the
workers' CPU per call with the guard against without, at the largest step both answered in full (goal: at most
10 % more).

``--realtime-priority N`` runs the system under test of both paths (the bridge's workers, the loopback apps)
``SCHED_RR`` at N, as ``callbridge serve --realtime-priority N`` does (see bridge/runtime/sched.py); the load
callers and the emulator stay ordinary. Each step's ``scheduling`` says what the processes really got (it needs root or
CAP_SYS_NICE; a step where it was not applied says so).

``--redis`` gives the bridge paths' workers a private ``redis-server`` (``redis_url``), and each of their steps
reports the Redis commands and bytes per call-second over its window (the calls' steady state), by key kind
(bench/calls/redis.py).

A path stops at its first failing step (its capacity is known then); a failing step is run once more, and fails
only if that run fails too (both paths alike: one stall of 200 ms fails a small step). ``--json`` steps carry
``late_by_target``: late frames per callee port (the answering Contact's: a worker, also behind the front, or a
loopback app), which tells one stalled process from a machine-wide stall, and ``unanswered_why``: the calls a
caller did not have up when the window opened or closed, by SIP status and what was missing (not answered yet,
ended, no audio stream yet).

Each step's ``pss MB proc/call`` is the system under test's PSS as its window closes; for the bridge the summary
also counts the workers' preloaded parent (``bridge.serve.zygote``), the PSS per call "all in" (goal: at most 8 MB).

The summary line gives the most calls with every step up to it passing, for each path, and their ratio (goal:
bridge >= 75 % of the ceiling), and the inbound p99 at that load (goal: <= 10 ms). If the ceiling passes the
largest step, its real capacity is higher and the ratio shown is an upper bound; raise ``--max-calls``.
"""

from __future__ import annotations

from collections.abc import Sequence

# The package, as its files draw it:
#
#   cli.py      the command line, and the roles its subprocesses run
#   ladder.py   the steps for every path, re-runs, the table and the summary as it goes
#   paths.py    one step of each path: the bridge's pool (directly or behind Kamailio), the ceiling's loopback apps
#   callers.py  the load callers and loopback apps: their processes and the orchestrator's side of them
#   score.py    a step's figures from the callers' rows, the workers' reports, the emulator's sessions and CPU
#   report.py   Step, the table's rows, the summary and its goals
#   machine.py  CPU time from /proc, spawning and stopping child processes
#   otlp.py     the otel path's collector: a local OTLP/HTTP receiver that counts the workers' exports
#
# The pjsua2 side of the load callers and the loopback apps is bridge/sip/loadcall.py.


def main(argv: Sequence[str] | None = None) -> int:
    from bench.calls.cli import main as run

    return run(argv)
