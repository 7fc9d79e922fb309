"""``a=ptime`` written into the SDP the bridge sends (``bridge.sip.sdpptime.with_ptime``, pure): each audio section
that names none gets the packet time sent, at its end; one that names one, other media and non-SDP text are kept."""

from __future__ import annotations

from bridge.sip.sdpptime import with_ptime

SDP = (
    "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=pjmedia\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n"
    "m=audio 4000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
)


def test_an_audio_section_without_ptime_gets_the_one_sent_at_its_end() -> None:
    assert with_ptime(SDP, 20) == SDP + "a=ptime:20\r\n"
    two = SDP + "m=video 0 RTP/AVP 31\r\nm=audio 0 RTP/AVP 8\r\na=inactive\r\n"
    assert with_ptime(two, 20) == (
        SDP + "a=ptime:20\r\nm=video 0 RTP/AVP 31\r\nm=audio 0 RTP/AVP 8\r\na=inactive\r\na=ptime:20\r\n"
    )
    assert with_ptime(SDP.replace("\r\n", "\n"), 20) == SDP.replace("\r\n", "\n") + "a=ptime:20\n"


def test_a_section_that_names_a_ptime_or_no_audio_is_kept() -> None:
    assert with_ptime(SDP + "a=ptime:20\r\n", 20) is None
    assert with_ptime(SDP.replace("a=sendrecv", "a=PTIME:30\r\na=sendrecv"), 20) is None
    assert with_ptime("v=0\r\nm=video 4002 RTP/AVP 31\r\n", 20) is None
    assert with_ptime("not an sdp", 20) is None
    assert with_ptime("", 20) is None
