"""Every masking of what is shown, logged and stored, in one place. Pure functions of strings and JSON values.

* **URLs** (:func:`mask_url`, :func:`mask_urls`): a URL's password and the value of every query parameter that
  names a secret (:data:`SECRET_PARAM`) as ``****``: logs, ``config show``, a recording's header.
* **A caller's number, as stored and logged** (:func:`mask_number`): every digit but the last ``visible`` (a
  dialplan's ``privacy.caller_visible_digits``) as ``*``; ``+``, ``sip:`` and the host stay.
* **A caller, as a console viewer sees it** (:func:`viewer_number`, :func:`viewer_text`): a number keeps its last
  :data:`VIEWER_SHOWN` characters, the rest as ``•`` (``+15551234`` -> ``•••••••34``); a name (``alice``,
  ``sip:desk-3``) is not a number and is shown as it is, its digits masked only where a run of them could be one
  (``bob 5551234`` -> ``bob •••••34``).
* **Card and account digits** (:func:`mask_digit_runs`, :func:`mask_value`, :func:`mask_json`): a tool's arguments
  and output as stored and shown: in every run of digits (a space or a dash between two digits keeps the run
  going), each digit after the first ``visible`` is ``*``; in JSON, every string and every number (a number with
  more digits than the visible becomes a masked string); the keys stay.
* **Numbers in a SIP message** (:func:`mask_sip_numbers`): a packet dump or a line quoting peer data in a log, each
  URI's and display name's number as :func:`mask_number` masks it.
* **An API key in an error message** (:func:`mask_api_key`): its first six and last four characters, as the
  OpenAI service shows a wrong one (the emulator's answers).
* **Digits said aloud** (:func:`redact_spoken_digits`): a run of digits said as words ("four one one one ...") or
  written as numerals, longer than the visible digits, becomes ``****`` (the transcript).
* **A text masking through a JSON value** (:func:`redact_value`): the post-call fields the model filled in: every
  string, and every number written out in full (a card number in an ``integer`` field is a run of digits too),
  through the transcript's masking; a number the masking changes becomes its masked text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

MASK: Final = "*"  # a masked digit in what is stored and logged
HIDDEN: Final = "****"  # a whole value hidden (a URL's password, a secret parameter, a long spoken number)
VIEWER_MASK: Final = "•"  # a masked character of a caller as a console viewer sees it
VIEWER_SHOWN: Final = 2
NUMBER_MIN_DIGITS: Final = 4  # a shorter run of digits in a name (``desk-3``, ``agent42``) tells nothing about a number

# a query parameter whose value is a secret, by its name
SECRET_PARAM: Final = re.compile(r"pass|secret|token|key|auth|sig|credential|session", re.IGNORECASE)

_PUNCTUATION = frozenset("+-.() /")
_VIEWER_RUN = re.compile(rf"\d{{{NUMBER_MIN_DIGITS},}}")
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d)*")
_NUMERALS = "zero:0 oh:0 o:0 one:1 two:2 three:3 four:4 five:5 six:6 seven:7 eight:8 nine:9 double: triple:"
_WORDS: Final = dict(pair.split(":") for pair in _NUMERALS.split())  # a spoken word: the digits it says
_TOKEN = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]+|\s+")
_JOINERS = frozenset({",", "-", "/"})
_SIP_USER = re.compile(r"\b((?:sips?|tel):)([^@;>\s,\"]+)", re.IGNORECASE)
_DISPLAY_NAME = re.compile(r'"([^"\r\n]{1,64})"')


def mask_url(url: str) -> str:
    """``url`` safe to log and to show, the one masking of every URL: its password (``redis://user:pw@host``,
    ``redis://:pw@host``) and the value of every query parameter that names a secret (``?password=``,
    ``?sentinel_password=``, ``?token=``, ``?api_key=``, ...: :data:`SECRET_PARAM`) shown as ``****``."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "[unparsable URL]"
    if password:
        user, _, host = parts.netloc.rpartition("@")
        parts = parts._replace(netloc=f"{user.split(':', 1)[0]}:{HIDDEN}@{host}")
    if parts.query:
        query = "&".join(
            f"{name}{eq}{HIDDEN}" if eq and SECRET_PARAM.search(unquote(name)) else f"{name}{eq}{value}"
            for name, eq, value in (pair.partition("=") for pair in parts.query.split("&"))
        )
        parts = parts._replace(query=query)
    if parts.fragment and SECRET_PARAM.search(parts.fragment):
        parts = parts._replace(fragment=HIDDEN)
    return urlunsplit(parts)


def mask_urls(value: Any) -> Any:
    """``value`` with every URL in it (a string with ``://``, alone or in a list or mapping) through
    :func:`mask_url`."""
    if isinstance(value, str):
        return mask_url(value) if "://" in value else value
    if isinstance(value, list):
        return [mask_urls(v) for v in value]
    if isinstance(value, dict):
        return {k: mask_urls(v) for k, v in value.items()}
    return value


def mask_api_key(key: str) -> str:
    """``sk-abc***wxyz``: what the OpenAI service shows of a key it refuses (``***`` for a short one)."""
    return key[:6] + "*" * 3 + key[-4:] if len(key) > 12 else "***"


def mask_number(number: str, visible: int | None) -> str:
    """``number`` with every digit but the last ``visible`` as ``*`` (``None``: unchanged); other characters
    (``+``, ``sip:``, the host) stay."""
    if visible is None:
        return number
    user, at, host = number.partition("@")
    keep = sum(c.isdigit() for c in user) - visible
    out = []
    for c in user:
        if c.isdigit():
            out.append(c if keep <= 0 else MASK)
            keep -= 1
        else:
            out.append(c)
    return "".join(out) + at + host


def mask_sip_numbers(text: str, visible: int) -> str:
    """``text`` (a SIP message, or a log line quoting one) with every number in it that names a party masked as
    :func:`mask_number` does: the user part of each ``sip:``, ``sips:`` and ``tel:`` URI, and a quoted display name,
    that is a number (:func:`is_number`). Names, hosts and ports stay."""

    def uri(match: re.Match[str]) -> str:
        user = match.group(2)
        return match.group(1) + (mask_number(user, visible) if is_number(user) else user)

    def display(match: re.Match[str]) -> str:
        name = match.group(1)
        return f'"{mask_number(name, visible)}"' if is_number(name) else match.group(0)

    return _DISPLAY_NAME.sub(display, _SIP_USER.sub(uri, text))


def is_number(caller: str) -> bool:
    """Digits and the punctuation numbers are written with (``+1 (555) 123-4567``), nothing else."""
    return any(c.isdigit() for c in caller) and all(c.isdigit() or c in _PUNCTUATION for c in caller)


def _viewer_masked(chars: str) -> str:
    if len(chars) <= VIEWER_SHOWN:
        return VIEWER_MASK * len(chars)
    return VIEWER_MASK * (len(chars) - VIEWER_SHOWN) + chars[-VIEWER_SHOWN:]


def viewer_number(caller: str) -> str:
    """A number with all but its last :data:`VIEWER_SHOWN` characters masked; anything else (a name) with each run
    of :data:`NUMBER_MIN_DIGITS` or more digits masked the same way, its letters as they are."""
    if is_number(caller):
        return _viewer_masked(caller)
    return _VIEWER_RUN.sub(lambda m: _viewer_masked(m.group()), caller)


def viewer_text(text: str, caller: str) -> str:
    """``text`` with every occurrence of the ``caller`` masked (a name without a number in it stays)."""
    shown = viewer_number(caller)
    return text.replace(caller, shown) if caller and shown != caller else text


def mask_digit_runs(text: str, visible: int) -> str:
    """``text`` with every digit after the first ``visible`` of each run of digits shown as ``*``."""

    def one(run: re.Match[str]) -> str:
        seen, out = 0, []
        for c in run.group(0):
            seen += c.isdigit()
            out.append(MASK if c.isdigit() and seen > visible else c)
        return "".join(out)

    return _DIGIT_RUN.sub(one, text)


def mask_value(value: object, visible: int) -> object:
    """A parsed JSON value with its digit runs masked (strings and numbers; the keys stay)."""
    if isinstance(value, str):
        return mask_digit_runs(value, visible)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        shown = mask_digit_runs(repr(value), visible)
        return value if shown == repr(value) else shown
    if isinstance(value, list):
        return [mask_value(v, visible) for v in value]
    if isinstance(value, dict):
        return {k: mask_value(v, visible) for k, v in value.items()}
    return value


def numeral(number: int | float) -> str:
    """``number`` written out in full, as a caller would say it: no exponent (``4.111111111111111e+16`` ->
    ``41111111111111110``), no trailing ``.0`` on a whole float."""
    if isinstance(number, int):
        return str(number)
    text = repr(number)
    if "e" in text:
        text = format(Decimal(text), "f")  # the shortest repr's digits, without the exponent
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def redact_value(value: object, redact: Callable[[str], str]) -> object:
    """A parsed JSON value (lists and mappings to any depth) with ``redact`` applied to every string and to every
    number's :func:`numeral`: a number the masking changes becomes the masked text (``4111111111111111`` ->
    ``"****"``), one it leaves alone stays a number. Keys, booleans and null stay."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float):
        text = numeral(value)
        shown = redact(text)
        return value if shown == text else shown
    if isinstance(value, list | tuple):
        return [redact_value(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: redact_value(v, redact) for k, v in value.items()}
    return value


def mask_json(text: str, visible: int) -> str:
    """A tool's arguments or output (JSON text, or any text) with its digit runs masked."""
    try:
        value = json.loads(text)
    except ValueError:
        return mask_digit_runs(text, visible)
    return json.dumps(mask_value(value, visible), ensure_ascii=False)


def redact_spoken_digits(text: str, visible: int) -> str:
    """``text`` with every run of more than ``visible`` digits (words or numerals, separated by spaces, commas or
    dashes) replaced by ``****``."""
    out: list[str] = []
    run: list[str] = []  # the tokens of the current run (digits and what separates them)
    digits = 0

    def close() -> None:
        nonlocal digits
        tail: list[str] = []
        while run and _digit_count(run[-1]) is None:  # separators after the last digit are not the run's
            tail.insert(0, run.pop())
        out.extend([HIDDEN] if digits > visible else run)
        out.extend(tail)
        run.clear()
        digits = 0

    for token in _TOKEN.findall(text):
        count = _digit_count(token)
        if count is not None:
            run.append(token)
            digits += count
        elif run and (token.isspace() or token.strip() in _JOINERS):
            run.append(token)
        else:
            if run:
                close()
            out.append(token)
    if run:
        close()
    return "".join(out)


def _digit_count(token: str) -> int | None:
    if token.isdigit():
        return len(token)
    word = _WORDS.get(token.lower())
    return None if word is None else len(word)
