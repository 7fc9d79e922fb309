"""SIP INFO with ``application/dtmf``: the body is the digit itself (``5``, ``#``), as some PBXs and SBCs send it.

pjsua reads the other common INFO format itself (``application/dtmf-relay``, ``Signal=5`` / ``Duration=160``, and
calls ``onDtmfDigit``), but answers an INFO with any other body ``500`` (pjsip's invite session answers an in-dialog
request nobody handled so), and the digit is lost. The gateway's request hook (:mod:`bridge.sip.rxhook`) sees each
request before pjsip does; :class:`InfoDtmf` takes an ``application/dtmf`` INFO there, after the dialog guard has
checked its source: the digit goes to its call and the INFO is answered ``200`` (RFC 6086 §4.2.1: a UAS that
processed an INFO answers 2xx).

The answer is sent statelessly, so pjsip keeps no transaction to absorb a retransmission (RFC 3261 §17.2.2): the
same INFO again (its CSeq not above the last one taken for the dialog) is answered ``200`` again, and is no second
digit. What the body says is passed on as the gateway takes any SIP INFO "digit": one that is not 0-9 * # A-D is
dropped and counted there (``IncomingCall.dtmf_dropped``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from bridge.sip.sipmsg import message_body, parse_request_head

CONTENT_TYPE = "application/dtmf"
BODY_CHARS = 16  # a digit is one character; a longer body is cut here before it goes anywhere
OK: tuple[int, str, Mapping[str, str]] = (200, "OK", {})


def plain_digit(message: str) -> tuple[str, int, str] | None:
    """An INFO whose Content-Type is ``application/dtmf`` (parameters allowed) inside a dialog (a To tag):
    (its Call-ID, its CSeq number, the digit its body names: the body stripped, or a ``Signal=`` line's value).
    None for any other request."""
    if not message.startswith("INFO "):
        return None
    head = parse_request_head(message)
    if head is None:
        return None
    kind = head.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    to_tag = ";tag=" in head.headers.get("to", "").replace(" ", "").lower()
    call_id = head.headers.get("call-id", "").strip()
    number = head.headers.get("cseq", "").split(None, 1)[0] if head.headers.get("cseq") else ""
    if kind != CONTENT_TYPE or not to_tag or not call_id or not number.isdigit():
        return None
    body = message_body(message).strip()
    if body.lower().startswith("signal="):  # a relay-style body under this content type: its value
        body = body.splitlines()[0].partition("=")[2].strip()
    return call_id, int(number), body[:BODY_CHARS]


class InfoDtmf:
    """Takes ``application/dtmf`` INFOs of known calls (see the module doc). ``deliver(sip_call_id, digit)`` hands
    a digit to the call with that SIP Call-ID and returns False when there is none (pjsip's then: ``481``)."""

    def __init__(self, deliver: Callable[[str, str], bool]) -> None:
        self._deliver = deliver
        self._last: dict[str, int] = {}  # SIP Call-ID -> the CSeq of the last INFO digit taken

    def answer(self, message: str) -> tuple[int, str, Mapping[str, str]] | None:
        """The answer to ``message`` if it is an ``application/dtmf`` INFO of a known call (its digit delivered
        unless it was a retransmission), else None: the request goes on to pjsip."""
        found = plain_digit(message)
        if found is None:
            return None
        call_id, cseq, digit = found
        if cseq <= self._last.get(call_id, -1):
            return OK  # a retransmission: answered again, no second digit
        if not self._deliver(call_id, digit):
            return None
        self._last[call_id] = cseq
        return OK

    def forget(self, sip_call_id: str) -> None:
        """The call ended."""
        self._last.pop(sip_call_id, None)
