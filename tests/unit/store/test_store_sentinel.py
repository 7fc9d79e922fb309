"""``redis+sentinel://`` URLs: sentinels, service, db and credentials, and no password in logs."""

from __future__ import annotations

import pytest

from bridge.store.connection import SentinelUrl, parse_sentinel_url, safe_url


def test_several_sentinels_with_and_without_ports() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:26381/callbridge/2")
    assert parsed == SentinelUrl(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
        service="callbridge",
        db=2,
        password="s@cret",
    )
    assert "s@cret" not in repr(parsed) and "s%40cret" not in safe_url("redis+sentinel://:s%40cret@h/cb")


def test_defaults_user_and_sentinel_password() -> None:
    parsed = parse_sentinel_url("redis+sentinel://bridge:pw@sentinel.example/cb?sentinel_password=sp")
    assert (parsed.sentinels, parsed.service, parsed.db) == ((("sentinel.example", 26379),), "cb", 0)
    assert (parsed.username, parsed.password, parsed.sentinel_password) == ("bridge", "pw", "sp")


@pytest.mark.parametrize(
    "url",
    [
        "redis://h/cb",  # not a sentinel URL
        "redis+sentinel://h:port/cb",
        "redis+sentinel://h:70000/cb",
        "redis+sentinel://h",  # no service name
        "redis+sentinel://h/cb/x",  # db is not a number
        "redis+sentinel://h,/cb",  # an empty sentinel
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(url)
