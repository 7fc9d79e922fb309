"""What words say, as the replay gate reads an agent's answers (``bridge/replay/drift.py``, ``words.py``) and the
emulator's grader judges a statement (``bridge/emulator/grader.py``): the words of a text, its content words, its
negations and facts (numbers, times, prices, dates, names), the similarity of two texts and the changes that flip
meaning from one to the other.

Pure: text in, words and sentences out.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Final

_WORD: Final = re.compile(r"[a-z0-9$€£]+(?:['.:,][a-z0-9]+)*")


def words(text: str) -> list[str]:
    """The words of ``text``: lower case, curly quotes straightened, punctuation around words dropped (a decimal
    point, a time's colon, a thousands comma and an apostrophe inside a word kept)."""
    plain = text.lower().replace("\u2019", "'").replace("\u2018", "'")
    return _WORD.findall(plain)


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
    ca, cb = Counter(content_words(a)), Counter(content_words(b))
    total = sum(ca.values()) + sum(cb.values())
    return 1.0 if not total else 2 * sum((ca & cb).values()) / total


def content_words(text: str) -> list[str]:
    """The words of ``text`` that carry its content (:data:`STOP` left out), a plural's ``s`` dropped."""
    return [w.rstrip("s") if len(w) > 3 else w for w in words(text) if w not in STOP]


def negations(text: str) -> int:
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


def flips(before: str, after: str, *, within: bool = False) -> list[str]:
    """The changes that flip meaning from ``before`` to ``after``, named. ``within``: ``after`` may say more than
    ``before`` (a statement judged against what was said, ``bridge/emulator/grader.py``): a number, time, price,
    date or name of ``before`` missing from ``after`` is a change, one only ``after`` has is not."""
    if within:
        return _missing(before, after)
    out: list[str] = []
    n_before, n_after = negations(before), negations(after)
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


def _missing(statement: str, said: str) -> list[str]:
    """:func:`flips` ``within``: a negation added or removed, and each fact of ``statement`` that ``said`` lacks."""
    out = []
    if negations(statement) != negations(said):
        out.append(f"a negation {'added' if negations(said) > negations(statement) else 'removed'}")
    facts = Counter(w for ws in _kinds(said).values() for w in ws)
    for kind, was in _kinds(statement).items():
        lacks = Counter(was) - facts
        if lacks:
            out.append(f"a {kind} changed: {' '.join(sorted(lacks.elements()))} not said")
    lost = set(_names(statement)) - set(_names(said))
    if lost:
        out.append(f"a name changed: {', '.join(sorted(lost))} not said")
    return out
