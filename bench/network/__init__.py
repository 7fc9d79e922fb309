"""``callbridge bench network [--loss 0,1,3,5] [--jitter-ms 40] [--paths anchor,g711,resampled] [--json]``: audio
on bad networks, measured with ITU-T P.862 PESQ (narrow band) against the clean speech.

One call per path and loss level, each through an impairment relay (bridge/devkit/rtprelay.py: loss at random
and in Gilbert-Elliott bursts, delay, jitter, all seeded) between the caller and the called side, both ways
alike. For each call the table gives:

- ``heard``: PESQ of what the caller heard (its pjsua2 jitter buffer and PLC on, as a phone's are) against the
  agent's speech; ``model``: PESQ of what the model received (the emulator's appends; the anchor's callee
  recording) against the caller's speech;
- ``gaps``: 20 ms frames of digital silence inside speech, caller side / model side (nothing received, nothing
  concealed);
- ``turns``: the model's turn detection during the caller's one turn (the emulator's speech_started events;
  for the anchor the same VAD run over what its callee heard): more than on the clean line are false turns;
- the line as the relay measured it: lost and reordered packets of the uplink / downlink.

Paths (bench/network/paths.py): ``anchor`` is pjsua2 calling pjsua2 through the same relay (its own jitter buffer
and PLC at both ends, nothing of ours); ``g711`` a bridge worker passing G.711 through to the model;
``resampled`` the same with PCM16 24 kHz. The goals: heard >= 4.0 on a clean line and >= 3.5 at 3 % loss with
40 ms jitter; no more turns at 3 % loss than on the clean line. Without the ``pesq`` package (the test extra)
the bench says so and exits 2.
"""

from __future__ import annotations

from collections.abc import Sequence

# The package, as its files draw it:
#
#   cli.py      the command line, the runs and the table
#   paths.py    one call of each path through the relay, and what both ends recorded
#   signals.py  the speech both ways and the clean references
#   score.py    PESQ, gaps and turns of one call


def main(argv: Sequence[str] | None = None) -> int:
    from bench.network.cli import main as run

    return run(argv)
