#!/usr/bin/env bash
# Regenerates the outage audio shipped in bridge/assets (bridge/call/outage.py): the hold message and the apology,
# 8 kHz mono 16-bit PCM WAV, from espeak-ng speech and sox tones.
#
#   call_scripts/make_outage_audio.sh
#
# hold.wav: a soft 480 Hz chime, "One moment please.", a pause. It is played in a loop while the model is away,
# so the caller hears the chime again after every message. apology.wav: the goodbye before a clean BYE.
# -R -D: repeatable, undithered output (byte-identical reruns with the same espeak-ng / sox versions).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/../bridge/assets"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
FMT=(-r 8000 -c 1 -e signed-integer -b 16)

speech() {  # speech FILE TEXT
  espeak-ng -v en-us -s 150 -p 45 -w "$TMP/raw.wav" "$2"
  sox -R -D "$TMP/raw.wav" "${FMT[@]}" "$1" gain -n -6
}

sox -R -D -n "${FMT[@]}" "$TMP/chime.wav" synth 0.4 sine 480 fade h 0.03 0.4 0.1 gain -12
sox -R -D -n "${FMT[@]}" "$TMP/gap.wav" trim 0 0.3
sox -R -D -n "${FMT[@]}" "$TMP/pause.wav" trim 0 2.0
speech "$TMP/moment.wav" "One moment please."
sox -R -D "$TMP/chime.wav" "$TMP/gap.wav" "$TMP/moment.wav" "$TMP/pause.wav" "$OUT/hold.wav"
speech "$OUT/apology.wav" "We are sorry, we cannot continue this call right now. Please call again later. Goodbye."
echo "wrote $OUT/hold.wav $OUT/apology.wav"
