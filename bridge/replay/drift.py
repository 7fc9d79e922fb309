"""Answer drift against the baseline: each answer of each run (the greeting, the answer to each turn, the closing
line: ``bridge/replay/words.py``) compared with the baseline run's, with a similarity and the changes that flip
meaning named.

* **similarity**: how many of the answers' content words (the small words left out) they share, 0-100 % (the
  Dice coefficient): a paraphrase that keeps what it says keeps its content words, in any order;
* **meaning flips**: a negation added or removed (not, no, never, -n't, cannot, ...), a number, time, price or date
  changed (digits and number words, a time with am/pm or a colon, an amount with a currency, a weekday, a month or an
  ordinal), a name changed (a capitalized word inside a sentence).

An answer **changed** when a flip is named or the similarity is under :data:`SIMILAR` (it says something else). A
changed **pinned** answer (one the script holds to a ``says``) is red unless declared: by the script (the
expectation's ``changed: REASON``) or by ``replay --accept SCRIPT[:ANSWER]`` (``ANSWER``: ``greeting``,
``turns[N]``, ``closing``; without it every answer of the script), each declaration recorded. A changed unpinned
answer is listed by turn; an answer in other words (no flip, similar enough) is listed with its similarity, green.

Pure: report data in, sentences out.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from bridge.replay.words import words

SIMILAR: Final = 0.4  # under this similarity an answer says something else


def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# small words, and the courtesies that carry no fact (a greeting or a goodbye in other words keeps its facts)
STOP: Final = _set(
    "a an the and or but so to of in on at for from with by as is are am was were be been being it its it's this that "
    "these those there here we we're our you you're your i i'm me my he she they them their us do does did can could "
    "will would shall should may might must have has had just also very really yes oh well please let let's thank "
    "thanks hi hello how what help today here calling sorry apologies about course sure okay ok now"
)
NEGATIONS: Final = _set("not no never none nobody nothing nowhere neither nor cannot without")
NUMBER_WORDS: Final = _set(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million half "
    "quarter"
)
DATE_WORDS: Final = _set(
    "monday tuesday wednesday thursday friday saturday sunday mondays tuesdays wednesdays thursdays fridays saturdays "
    "sundays january february march april may june july august september october november december tomorrow "
    "yesterday tonight weekend weekends weekday weekdays first second third fourth fifth sixth seventh eighth ninth "
    "tenth eleventh twelfth thirteenth fourteenth fifteenth twentieth thirtieth"
)
TIME_WORDS: Final = _set("am pm a.m p.m o'clock noon midnight morning afternoon evening night")
MONEY_WORDS: Final = _set("dollar dollars cent cents euro euros pound pounds usd")
_ORDINAL: Final = re.compile(r"^\d+(st|nd|rd|th)$")
_NAME: Final = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s[A-Z][a-z]+)*")


def similarity(a: str, b: str) -> float:
    """The share of content words two answers have in common (Dice), 1.0 for two with none."""
    ca, cb = Counter(_content(a)), Counter(_content(b))
    total = sum(ca.values()) + sum(cb.values())
    return 1.0 if not total else 2 * sum((ca & cb).values()) / total


def _content(text: str) -> list[str]:
    return [w.rstrip("s") if len(w) > 3 else w for w in words(text) if w not in STOP]


def _negations(text: str) -> int:
    return sum(1 for w in words(text) if w in NEGATIONS or w.endswith("n't"))


def _kinds(text: str) -> dict[str, list[str]]:
    """Per kind of fact (number, time, price, date), the words that say one, in order."""
    ws = words(text)
    out: dict[str, list[str]] = {"number": [], "time": [], "price": [], "date": []}
    for i, w in enumerate(ws):
        near = set(ws[max(0, i - 1) : i + 3])
        numeric = any(c.isdigit() for c in w) or w in NUMBER_WORDS
        if w in DATE_WORDS or _ORDINAL.match(w):
            out["date"].append(w)
        elif numeric and (w[0] in "$€£" or near & MONEY_WORDS):
            out["price"].append(w)
        elif numeric and (":" in w or near & TIME_WORDS):
            out["time"].append(w)
        elif numeric:
            out["number"].append(w)
    return out


def _names(text: str) -> list[str]:
    """Capitalized words inside a sentence (not its first word): names of people, places, products."""
    said = (m.group(0) for m in _NAME.finditer(text))
    return [n for n in said if n.lower() not in STOP | DATE_WORDS | NUMBER_WORDS]


def flips(before: str, after: str) -> list[str]:
    """The changes that flip meaning from ``before`` to ``after``, named."""
    out: list[str] = []
    n_before, n_after = _negations(before), _negations(after)
    if n_after > n_before:
        out.append("a negation added")
    elif n_after < n_before:
        out.append("a negation removed")
    kinds_before, kinds_after = _kinds(before), _kinds(after)
    for kind in ("number", "time", "price", "date"):
        was, now = kinds_before[kind], kinds_after[kind]
        if sorted(was) != sorted(now):
            out.append(f"a {kind} changed: {' '.join(was) or '-'} -> {' '.join(now) or '-'}")
    was_names, now_names = set(_names(before)), set(_names(after))
    if was_names != now_names:
        out.append(
            f"a name changed: {', '.join(sorted(was_names - now_names)) or '-'} -> "
            f"{', '.join(sorted(now_names - was_names)) or '-'}"
        )
    return out


def _short(text: str, n: int = 70) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _accepted(accepts: Iterable[str], script: str, answer: str) -> str | None:
    return next((a for a in accepts if a in (script, f"{script}:{answer}")), None)


def drift(
    script: Mapping[str, Any], then: Mapping[str, Any], accepts: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], list[str], list[dict[str, str]]]:
    """One script's answers against the baseline's: (each answer that differs, as data; the red lines; the accepts
    used). ``script`` carries ``pinned`` (answer -> the script's declared reason, "" for none)."""
    from bridge.replay.compare import label

    name = str(script.get("script"))
    pinned: Mapping[str, str] = script.get("pinned") or {}
    found: list[dict[str, Any]] = []
    red: list[str] = []
    used: list[dict[str, str]] = []
    runs_then = then.get("runs") or {}
    for run, body in (script.get("runs") or {}).items():
        now_answers, then_answers = body.get("answers") or {}, (runs_then.get(run) or {}).get("answers")
        if then_answers is None:
            continue  # a baseline that did not record its answers
        for answer in dict.fromkeys([*then_answers, *now_answers]):
            before, after = str(then_answers.get(answer, "")), str(now_answers.get(answer, ""))
            if words(before) == words(after):
                continue
            sim, named = similarity(before, after), flips(before, after)
            changed = bool(named) or sim < SIMILAR
            item = {
                "run": run,
                "answer": answer,
                "similarity": round(sim, 2),
                "flips": named,
                "before": before,
                "after": after,
                "pinned": answer in pinned,
                "changed": changed,
            }
            found.append(item)
            if not (changed and answer in pinned):
                continue
            why = "; ".join([*named, *([f"says something else (similarity {sim:.0%})"] if sim < SIMILAR else [])])
            by = _accepted(accepts, name, answer)
            if pinned[answer]:
                used.append(
                    {"kind": "answer", "name": f"{name}/{run}/{answer}", "by": "the script", "reason": pinned[answer]}
                )
            elif by is not None:
                used.append({"kind": "answer", "name": f"{name}/{run}/{answer}", "by": f"--accept {by}"})
            else:
                red.append(
                    f"answer: {label(run)} {answer}, pinned, changed: {why}: {_short(before)!r} -> "
                    f"{_short(after)!r} (--accept {name}:{answer} if on purpose)"
                )
    return found, red, used


def drift_lines(found: Sequence[Mapping[str, Any]]) -> list[str]:
    """The report's lines of what the answers did since the baseline (similarity and flips shown)."""
    from bridge.replay.compare import label

    out = []
    for item in found:
        what = "changed" if item["changed"] else "in other words"
        flipped = f"; {'; '.join(item['flips'])}" if item["flips"] else ""
        pin = ", pinned" if item["pinned"] else ""
        out.append(
            f"{label(item['run'])}: answer {item['answer']}{pin} {what} (similarity {item['similarity']:.0%}"
            f"{flipped}): {_short(item['before'])!r} -> {_short(item['after'])!r}"
        )
    return out
