"""What the agent said aloud, answer by answer, and the script's expectations on it.

The agent's lines are its final transcripts (``AgentSaid``), each placed by the time its item began: before the
caller first acts it is the **greeting**; after, it answers the turn the caller last acted in (spoke, pressed keys),
so an answer cut by a barge-in still belongs to the turn it answered. The **closing line** is the call's last line.
Where a run has no items (Live: one continuous output stream, its transcripts final only later), its lines are not
placed by answer: only the closing line, the phrases never to be said and ``spoken_json`` are checked there.

Matching is on the words said aloud only: JSON in a line (a tool's output or arguments read to the caller) is cut
out before any phrase or pattern is looked for, and a line that holds JSON fails the ``spoken_json`` check of every
run: an agent that reads ``{"ok":true,...}`` to a caller is caught, and a word inside it never matches. A phrase
matches whole words in order, case and punctuation aside (``"not"`` is not in ``"note"``); a pattern is a regular
expression, searched case-insensitively in the line as said (JSON cut out).

Pure: a run's report and the script's turns in, answers and checks out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from bridge import events as ev
from bridge.call.report import noted, noted_all
from bridge.meaning.reading import words
from bridge.replay.script import AgentSays, Said, Turn

_OPENERS: Final = "{["
GREETING: Final = "greeting"
CLOSING: Final = "closing"


def strip_json(text: str) -> tuple[str, list[str]]:
    """``text`` with every JSON object (or array of them) in it cut out, and the pieces cut."""
    decoder = json.JSONDecoder()
    out: list[str] = []
    found: list[str] = []
    i = 0
    while i < len(text):
        if text[i] in _OPENERS:
            try:
                value, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError:
                value, end = None, i
            if _structured(value) and end > i:
                found.append(text[i:end])
                i = end
                continue
        out.append(text[i])
        i += 1
    return " ".join("".join(out).split()), found


def _structured(value: Any) -> bool:
    """A JSON object, or an array holding one or an array: a tool's data, not words (``[1]`` may be said)."""
    if isinstance(value, dict):
        return bool(value)
    return isinstance(value, list) and any(isinstance(v, dict | list) for v in value)


def said(item: Said, text: str) -> bool:
    """Whether ``item`` (a phrase or a pattern) is in ``text`` (JSON already cut out)."""
    if item.pattern is not None:
        return re.search(item.pattern, text, re.IGNORECASE) is not None
    want, have = words(item.phrase or ""), words(text)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


@dataclass
class Answers:
    """The agent's lines of one run, as said aloud (JSON cut out), by answer."""

    greeting: list[str] = field(default_factory=list)
    turns: dict[int, list[str]] = field(default_factory=dict)  # the script's turn index -> its answer's lines
    lines: list[str] = field(default_factory=list)  # every line, in order
    json: list[str] = field(default_factory=list)  # the lines that held JSON, as said
    placed: bool = True  # False: the run has no items to place lines by (Live's one continuous stream)

    @property
    def closing(self) -> str | None:
        return self.lines[-1] if self.lines else None

    def to_json(self) -> dict[str, str]:
        """Answer -> its words (``greeting``, ``turns[N]``, ``closing``), for the report and the baseline."""
        if not self.placed:
            return {CLOSING: self.closing} if self.closing is not None else {}
        out = {GREETING: " ".join(self.greeting)} if self.greeting else {}
        out |= {f"turns[{i}]": " ".join(lines) for i, lines in sorted(self.turns.items())}
        if self.closing is not None:
            out[CLOSING] = self.closing
        return out


def _acts(turns: Sequence[Turn], spans: Sequence[tuple[float, float, str]]) -> list[tuple[float, int]]:
    """(when, turn index) each turn began to act, from the caller's spans: speech ``turn N: ...``, keys in the
    order the turns press them, a hang-up last."""
    keyed = iter([i for i, t in enumerate(turns) for _ in (t.dtmf or "")])
    hangups = iter([i for i, t in enumerate(turns) if t.hangup and t.say is None and t.dtmf is None])
    acts: dict[int, float] = {}
    for start, _, what in spans:
        match = re.match(r"^turn (\d+):", what)
        index = int(match.group(1)) if match else None
        if index is None and what.startswith("DTMF"):
            index = next(keyed, None)
        elif index is None and what == "hangup":
            index = next(hangups, None)
        if index is not None and index not in acts:
            acts[index] = float(start)
    return sorted((t, i) for i, t in acts.items())


def answers(report: Mapping[str, Any], turns: Sequence[Turn], spans: Sequence[tuple[float, float, str]]) -> Answers:
    """The agent's lines of a run by answer (see the module docstring)."""
    began = {r.item_id: t for t, r in noted(report, ev.OutputItem) if r.item_type is ev.ItemType.MESSAGE}
    acts = _acts(turns, spans)
    said = noted_all(report, (ev.AgentSaid,))
    # placed by their items: none of Live's lines is an item of its own
    out = Answers(placed=not said or any(isinstance(r, ev.AgentSaid) and r.item_id in began for _, r in said))
    for t, line in said:
        assert isinstance(line, ev.AgentSaid)
        text, found = strip_json(line.text)
        if found:
            out.json.append(line.text)
        if not text:
            continue
        start = began.get(line.item_id, t)
        turn = next((i for at, i in reversed(acts) if at <= start), None)
        if turn is None:
            out.greeting.append(text)
        else:
            out.turns.setdefault(turn, []).append(text)
        out.lines.append(text)
    return out


Found = tuple[str, bool, str]  # (check name, ok, detail), as bridge/replay/compare.py makes a Check of it


def _short(text: str, n: int = 90) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _one(name: str, want: AgentSays, lines: Sequence[str] | None, where: str) -> list[Found]:
    text = " ".join(lines or [])
    out: list[Found] = []
    if want.says:
        missing = [str(s) for s in want.says if not said(s, text)]
        heard = f"{where}: {_short(text)!r}" if text else f"{where}: the agent said nothing"
        detail = f"missing {', '.join(missing)} {heard}" if missing else f"said {', '.join(map(str, want.says))}"
        out.append((f"{name}.says", not missing, detail))
    if want.never_says:
        bad = [str(s) for s in want.never_says if said(s, text)]
        detail = f"said {', '.join(bad)} {where}: {_short(text)!r}" if bad else "none said"
        out.append((f"{name}.never_says", not bad, detail))
    return out


def word_checks(
    found: Answers, turns: Sequence[Turn], greeting: AgentSays | None, closing: AgentSays | None, never: list[Said]
) -> list[Found]:
    """The checks of the agent's words: each turn's ``expect``, the greeting's, the closing line's, the phrases
    never to be said in any line, and ``spoken_json`` (no JSON read aloud) always."""
    out: list[Found] = []
    if greeting is not None and found.placed:
        out += _one("expect.greeting", greeting, found.greeting, "in the greeting")
    for i, turn in enumerate(turns):
        if turn.expect is not None and found.placed:
            out += _one(f"turns[{i}].expect", turn.expect, found.turns.get(i), f"in the answer to turns[{i}]")
    if closing is not None:
        last = [found.closing] if found.closing is not None else []
        out += _one("expect.closing_line", closing, last, "in the closing line")
    if never:
        bad = [(str(s), line) for s in never for line in found.lines if said(s, line)]
        detail = "; ".join(f"said {s} in {_short(line)!r}" for s, line in bad) or "none said"
        out.append(("expect.agent_never_says", not bad, detail))
    detail = "; ".join(_short(line) for line in found.json) or "no JSON read aloud"
    out.append(("spoken_json", not found.json, f"the agent read raw JSON aloud: {detail}" if found.json else detail))
    return out
