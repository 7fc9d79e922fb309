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

The words' reading (content words, negations, facts, similarity, flips) is ``bridge/meaning/reading.py``'s, shared with
the emulator's grader.

Pure: report data in, sentences out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from bridge.meaning.reading import flips, similarity, words

SIMILAR: Final = 0.4  # under this similarity an answer says something else


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
