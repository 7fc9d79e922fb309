"""``callbridge call --timeline``: the caller's side of a real call, second by second, as the demo prints it.

Two real pjsua2 softphones: ``callbridge phone listen`` answers and plays a 1 s tone after 0.5 s of silence;
``callbridge call --timeline`` hangs up after 3 s and prints when it heard sound, how loud, and who ended the call.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from bridge.audio.analysis import tone
from bridge.audio.frames import SILENCE
from bridge.audio.wav import write_wav
from bridge.devkit.ports import free_port_block, softphone_port_args
from tests.integration.bridge._bridge_helpers import finish, run, start, wait_sip_ready

pytestmark = pytest.mark.integration


async def test_call_timeline_prints_what_the_caller_heard_and_who_ended(tmp_path: Path) -> None:
    played = tmp_path / "tone.wav"
    write_wav(played, SILENCE * 25 + tone(700.0, 1.0, dbfs=-12.0))  # 0.5 s of silence, then 1 s at 700 Hz
    port = free_port_block(1)
    listener = await start(
        sys.executable, "-m", "bridge", "phone", "listen", "--port", str(port), "--play", str(played),
        "--duration", "30", "--calls", "1", "--json",
    )  # fmt: skip
    await wait_sip_ready(port, proc=listener)
    done = await run(
        sys.executable, "-m", "bridge", "call", f"sip:agent@127.0.0.1:{port}", "--hangup-after", "3",
        "--timeline", *softphone_port_args(), timeout=60.0,
    )  # fmt: skip
    await finish(listener, 30.0)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if re.match(r"^\s+\d+\.\d\ds  ", line)]
    kinds = [row.split()[1] for row in rows]
    assert kinds[0] == "answered" and kinds[-1] == "ended", done.stdout
    heard = [row for row in rows if row.split()[1] == "heard"]
    assert len(heard) == 1, done.stdout  # one tone, one stretch of sound
    start_s = float(heard[0].split()[0].rstrip("s"))
    length_s = float(heard[0].split()[2])
    found = re.search(r"at (-?\d+(?:\.\d)?) dBFS", heard[0])
    assert found is not None, heard[0]
    level = float(found.group(1))
    assert 0.3 <= start_s <= 1.2 and 0.8 <= length_s <= 1.2, done.stdout  # after the 0.5 s of silence, about 1 s
    assert -16.0 <= level <= -9.0, done.stdout  # G.711 keeps the tone's -12 dBFS
    assert "this phone hung up" in rows[-1] and 2.8 <= float(rows[-1].split()[0].rstrip("s")) <= 4.0
