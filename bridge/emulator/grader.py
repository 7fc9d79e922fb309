"""The emulator's grader: ``POST /v1/responses`` (the Responses API with structured output, as the replay's grader
asks it, ``bridge/replay/grader.py``) answered by a deterministic rule instead of a model, so that tests and CI
judge ``means`` / ``must_not_mean`` / ``rubric`` without a key.

The request's input is the grader's JSON (``{"statements": [...], "answer": TEXT}`` or ``{"statements": [...],
"call": [{"speaker", "text"}, ...]}``: the agent's lines are judged); the answer is ``{"verdicts": [{"statement":
N, "holds": BOOL, "reason": TEXT}]}`` in one ``output_text``. A statement **holds** when some stretch of one to three
consecutive sentences of what the agent said

* says each **act** the statement names (:data:`ACTS`: greets, offers help, says goodbye, thanks, apologizes), by one
  of its cue phrases (``greets``: hello, hi, welcome, thank you for calling, ...);
* has at least :data:`COVER` of the statement's other content words (``bridge/meaning/reading.py``'s: small words,
  courtesies and the words that frame a statement, :data:`FRAMING`, left out; a plural's ``s`` dropped);
* flips none of its meaning (``bridge.meaning.reading.flips(..., within=True)``, the answer drift's): as many
  negations, and every number, time, price, date and name of the statement said.

A statement with a negation (``never promises a refund``) holds when it does without it does not. The rule knows
no synonyms (``a person`` is not ``a colleague``) and no paraphrase that changes every word; digits and number
words differ (``9`` is not ``nine``); a flip said in words it does not know (``closed`` for ``not open``) passes.
Write the statements in the words an answer uses, and judge abstract ones with a model (``--grader-model`` against
the OpenAI API).

Usage is counted as the service would bill it, roughly: a token per four characters in, per four characters out.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

from aiohttp import web

from bridge.emulator.http_api import Credentials, bearer, http_error
from bridge.meaning.reading import NEGATIONS, content_words, flips, negations, words
from bridge.privacy.masking import mask_api_key

COVER: Final = 0.6  # the share of a statement's content words a stretch of the answer must say
WINDOW: Final = 3  # sentences in a stretch, at most
# act -> (the words that name it in a statement, the phrases that say it in an answer)
ACTS: Final[dict[str, tuple[frozenset[str], tuple[str, ...]]]] = {
    "greets": (
        frozenset({"greet", "greets", "greeting", "greeted", "welcome", "welcomes"}),
        (
            *("hello", "hi", "hey", "welcome", "good morning", "good afternoon", "good evening"),
            *("thank you for calling", "thanks for calling"),
        ),
    ),
    "offers help": (
        frozenset({"help", "helps", "assist", "assists", "assistance"}),
        ("help", "assist", "what can i do"),
    ),
    "says goodbye": (frozenset({"goodbye", "bye", "farewell"}), ("goodbye", "bye", "have a good day", "take care")),
    "thanks": (frozenset({"thank", "thanks", "thanking"}), ("thank", "thanks")),
    "apologizes": (
        frozenset({"apologizes", "apologises", "apologize", "apologise", "apology"}),
        ("sorry", "apologize", "apologise", "apologies"),
    ),
}
# words that frame a statement about the agent rather than say what it said
FRAMING: Final = frozenset(
    {"agent", "caller", "offer", "offers", "says", "said", "tell", "tells", "mention", "mentions", "state", "states"}
    | {"confirm", "confirms", "explain", "explains", "inform", "informs", "politely", "clearly", "answer", "answers"}
)
_SENTENCE: Final = re.compile(r"(?<=[.!?])\s+")


def _phrase_in(phrase: str, text: str) -> bool:
    want, have = words(phrase), words(text)
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def _acts(statement: str) -> list[str]:
    said = set(words(statement))
    return [act for act, (names, _) in ACTS.items() if said & names]


def holds(statement: str, text: str) -> tuple[bool, str]:
    """Whether ``text`` (what the agent said) means ``statement`` by the rule (see the module), and why."""

    if negations(statement):
        positive = " ".join(w for w in statement.split() if w.lower().strip(".,;:!?") not in NEGATIONS)
        positive = re.sub(r"n't\b", "", positive)
        held, why = holds(positive, text)
        return not held, f"{'it does' if held else 'it does not'}: {why}"
    acts = _acts(statement)
    aside = set(content_words(" ".join([*FRAMING, *(w for act in acts for w in ACTS[act][0])])))
    need = [w for w in content_words(statement) if w not in aside]
    sentences = [s for s in _SENTENCE.split(" ".join(text.split())) if words(s)]
    best: tuple[float, str] = (-float("inf"), "the agent said nothing")
    for i in range(len(sentences)):
        for j in range(i + 1, min(len(sentences), i + WINDOW) + 1):
            stretch = " ".join(sentences[i:j])
            missing_acts = [a for a in acts if not any(_phrase_in(cue, stretch) for cue in ACTS[a][1])]
            have = set(content_words(stretch))
            lacking = [w for w in need if w not in have]
            cover = 1.0 - len(lacking) / len(need) if need else 1.0
            flipped = flips(statement, stretch, within=True)
            if not missing_acts and cover >= COVER and not flipped:
                return True, f"said in {stretch!r}"
            score = cover - len(missing_acts) - len(flipped)
            if score > best[0]:
                parts = [f"no sign it {a}" for a in missing_acts]
                parts += [f"lacks {', '.join(lacking)} ({cover:.0%} of its words)"] if cover < COVER else []
                best = (score, f"{'; '.join(parts + flipped)} in {stretch!r}")
    return False, best[1]


def judge(task: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The verdicts of a grader's task (its input's JSON): one per statement, in order."""
    statements = task.get("statements")
    if not isinstance(statements, list) or not all(isinstance(s, str) for s in statements):
        raise ValueError("statements: expected a list of strings")
    if isinstance(task.get("answer"), str):
        text = str(task["answer"])
    elif isinstance(task.get("call"), list):
        text = " ".join(str(line.get("text", "")) for line in task["call"] if line.get("speaker") == "agent")
    else:
        raise ValueError("expected answer (a string) or call (a list of lines)")
    out = []
    for n, statement in enumerate(statements):
        held, why = holds(statement, text)
        out.append({"statement": n, "holds": held, "reason": why})
    return out


def _task(body: Mapping[str, Any]) -> Mapping[str, Any]:
    """The grader's JSON task: the text of the request's (last) user message."""
    items = body.get("input")
    if isinstance(items, str):
        text = items
    elif isinstance(items, Sequence):
        users = [i for i in items if isinstance(i, Mapping) and i.get("role") == "user"]
        if not users:
            raise ValueError("input: no user message")
        content = users[-1].get("content")
        parts = content if isinstance(content, list) else [{"text": content}]
        text = "".join(str(p.get("text", "")) for p in parts if isinstance(p, Mapping))
    else:
        raise ValueError("input: expected a string or a list of messages")
    task = json.loads(text)
    if not isinstance(task, Mapping):
        raise ValueError("input: the grader's task is a JSON object")
    return task


def _tokens(text: str) -> int:
    return max(1, len(text) // 4)


def response(body: Mapping[str, Any], verdicts: list[dict[str, Any]], seq: int) -> dict[str, Any]:
    """A completed ``Response`` of the Responses API carrying ``verdicts`` as its JSON text."""
    text = json.dumps({"verdicts": verdicts})
    tokens_in = _tokens(json.dumps(body.get("input")) + str(body.get("instructions") or ""))
    tokens_out = _tokens(text)
    return {
        "id": f"resp_emulator{seq:08d}",
        "object": "response",
        "created_at": float(int(time.time())),
        "status": "completed",
        "model": str(body.get("model", "")),
        "instructions": body.get("instructions"),
        "output": [
            {
                "type": "message",
                "id": f"msg_emulator{seq:08d}",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "error": None,
        "incomplete_details": None,
        "metadata": {},
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
    }


class RuleGrader:
    """``POST /v1/responses`` judged by the rule; ``requests`` keeps each request's body (tests read them)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self.requests: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        key = bearer(request)
        if self.credentials.api_key is not None and not self.credentials.long_lived_ok(key):
            return http_error(401, "invalid_api_key", f"Incorrect API key provided: {mask_api_key(key)}.")
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return http_error(400, "invalid_json", "We could not parse the JSON body of your request.")
        if not isinstance(body, dict) or not body.get("model"):
            return http_error(400, "missing_required_parameter", "Missing required parameter: 'model'.", "model")
        self.requests.append(body)
        try:
            verdicts = judge(_task(body))
        except (ValueError, TypeError, AttributeError) as exc:  # not a grader's task: the rule judges nothing else
            message = f"the emulator's rule grader reads the grader's task: {exc}"
            return http_error(400, "invalid_value", message, "input")
        return web.json_response(response(body, verdicts, len(self.requests)))
