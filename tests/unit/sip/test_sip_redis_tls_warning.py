"""A Redis URL that turns the check of the server's certificate off (``?ssl_cert_reqs=none``, redis-py's query
option) is said at every start of ``serve`` (issue 62, item 21): one ``open:`` warning naming the setting, without
the URL (it may hold the password). Read with :func:`bridge.sip.exposure.open_warnings`, which ``serve`` logs at
start and ``callbridge health`` prints."""

from __future__ import annotations

import pytest

from bridge.config import Settings
from bridge.sip.exposure import open_warnings

PASSWORD = "s3cret-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"rediss://:{PASSWORD}@redis.example:6380/0?ssl_cert_reqs=none",
        f"rediss://app:{PASSWORD}@redis.example:6380/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=NONE",
        f"rediss+cluster://app:{PASSWORD}@10.0.0.1:7000,10.0.0.2:7000?ssl_cert_reqs=none",
        f"redis+sentinel://:{PASSWORD}@10.0.0.1:26379/callbridge/0?ssl_cert_reqs=none",
    ],
)
def test_unverified_redis_tls_is_one_warning_naming_the_setting(url: str) -> None:
    warnings = open_warnings(Settings(redis_url=url))
    named = [w for w in warnings if "ssl_cert_reqs" in w]
    assert len(named) == 1, warnings
    assert named[0].startswith("redis_url has ssl_cert_reqs=none: the Redis server's TLS certificate is not verified")
    assert all(PASSWORD not in w and "redis.example" not in w and "10.0.0.1" not in w for w in warnings), warnings


@pytest.mark.parametrize(
    "url",
    [
        None,
        "redis://127.0.0.1:6379/0",
        f"rediss://:{PASSWORD}@redis.example:6380/0?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        "rediss://redis.example:6380/0",  # redis-py's default: required
    ],
)
def test_verified_or_plain_redis_says_nothing_of_it(url: str | None) -> None:
    assert not [w for w in open_warnings(Settings(redis_url=url)) if "redis" in w.lower()]
