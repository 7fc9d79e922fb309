"""``redis+cluster://`` URLs: the nodes, credentials, TLS and its options; errors that name no password."""

from __future__ import annotations

import re

import pytest

from bridge.store.connection import is_cluster_url, parse_cluster_url, safe_url


def test_the_nodes_credentials_and_tls_of_a_cluster_url() -> None:
    parsed = parse_cluster_url("redis+cluster://app:s%40cret@10.0.0.1:7000,10.0.0.2,[::1]:7001")
    assert parsed.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 6379), ("::1", 7001))
    assert (parsed.username, parsed.password, parsed.tls) == ("app", "s@cret", False)
    assert "s@cret" not in repr(parsed) and "s%40cret" not in safe_url("redis+cluster://:s%40cret@h1:1,h2:2")
    tls = parse_cluster_url("rediss+cluster://h1:7000/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required")
    assert tls.tls and dict(tls.options) == {"ssl_ca_certs": "/etc/ca.pem", "ssl_cert_reqs": "required"}
    assert is_cluster_url("rediss+cluster://h1") and not is_cluster_url("redis://h1")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://:pw@h1:7000/3", "database 0 only"),
        ("redis+cluster://:pw@h1:99999", "bad port"),
        ("redis+cluster://:pw@h1,,h2", "address is empty"),
        ("redis+cluster://:pw@h1?ssl_ca_certs=/ca", "need rediss+cluster://"),
        ("redis+cluster://:pw@h1?db=2", "unknown option(s) db"),
    ],
)
def test_a_bad_cluster_url_is_refused_without_its_password(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_cluster_url(url)
    assert "pw" not in str(caught.value)
