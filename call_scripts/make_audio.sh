#!/usr/bin/env bash
# Regenerates the caller audio of the bundled call scripts: real speech from espeak-ng, as 8 kHz mono μ-law WAV
# (WAVE format tag 7), what a phone line carries (ITU-T G.711, RFC 3551 §4.5.14).
#
#   call_scripts/make_audio.sh            # (re)write every WAV listed below
#
# Needs espeak-ng and sox (apt-get install espeak-ng sox). Output depends only on the texts, the voice settings
# below and the espeak-ng / sox versions (written here with espeak-ng 1.51 and sox 14.4), so the committed WAVs can be
# reproduced. Each file is one caller turn; `tests/unit/replay/test_replay_scripts.py` checks that the emulator's
# VAD hears each as exactly one turn.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VOICE="en-us"     # espeak-ng voice
RATE=160          # words per minute
PITCH=45
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

say() {  # say SCRIPT_DIR FILE TEXT
  local dir="$HERE/$1" file="$2" text="$3"
  mkdir -p "$dir"
  espeak-ng -v "$VOICE" -s "$RATE" -p "$PITCH" -w "$TMP/speech.wav" "$text"
  # 8 kHz mono μ-law, no dither and repeatable (-D -R: byte-identical reruns); normalize to -3 dBFS peak so every turn clears the VAD threshold alike
  sox -R -D "$TMP/speech.wav" -r 8000 -c 1 -e u-law "$dir/$file" gain -n -3
  echo "$1/$file: $text"
}

say question_answer   q1_hours.wav      "Hi, what are your opening hours on Saturday?"

say barge_in          q1_returns.wav    "Can you explain your return policy?"
say barge_in          q2_canada.wav     "Sorry to interrupt, do you ship to Canada?"

say dtmf_menu         q1_internet.wav   "My internet connection keeps dropping."

say transfer          q1_human.wav      "I would like to speak to a human, please."

say idle_timeout      q1_hold_on.wav    "Hold on, let me find my account number."
say idle_timeout      q2_account.wav    "Sorry about that. My account number is one two three four."

say hangup_mid_response q1_terms.wav    "Can you read me the terms and conditions?"

say tool_end_call     q1_order.wav      "What is the status of my order?"
say tool_end_call     q2_goodbye.wav    "Great, that is all I needed. Goodbye."

say network_drop      q1_hours.wav      "What are your opening hours on Saturday?"
say network_drop      q2_cut_off.wav    "Hello? I think we got cut off. When are you open on Saturday?"

say billing_caller_first q1_charge.wav  "Hi, I have a question about the charge on my last bill."
say billing_caller_first q2_amount.wav  "The one for forty nine dollars."

say orchestrated_order q1_where.wav     "Where is my order?"
say orchestrated_order q2_person.wav    "Can I talk to a person about it?"
