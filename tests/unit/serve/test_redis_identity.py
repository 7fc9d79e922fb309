"""Which Redis a node's memory of seen rollout flags belongs to (bridge/serve/nodewatch.py): the server and
database a URL names, never its password."""

from bridge.serve.nodewatch import redis_identity


def test_the_same_server_and_database_are_one_redis_whatever_the_password() -> None:
    one = redis_identity("redis://127.0.0.1:6380/0")
    assert redis_identity("redis://:pw@127.0.0.1:6380/0") == one == redis_identity("redis://127.0.0.1:6380")
    assert "pw" not in one and len(one) == 16


def test_another_port_database_socket_or_sentinel_service_is_another_redis() -> None:
    seen = {
        redis_identity(url)
        for url in (
            "redis://127.0.0.1:6380/0",
            "redis://127.0.0.1:6381/0",
            "redis://127.0.0.1:6380/1",
            "redis://10.0.0.2:6380/0",
            "unix:///run/redis.sock?db=0",
            "unix:///run/redis.sock?db=2",
            "redis+sentinel://s1,s2/callbridge",
            "redis+sentinel://s1,s2/other",
        )
    }
    assert len(seen) == 8
    assert redis_identity("redis+sentinel://s1,s2/callbridge") == redis_identity("redis+sentinel://s3/callbridge/0")


def test_a_cluster_is_the_nodes_its_url_names_in_any_order() -> None:
    one = redis_identity("redis+cluster://:pw@10.0.0.1:7000,10.0.0.2:7000")
    assert one == redis_identity("redis+cluster://10.0.0.2:7000,10.0.0.1:7000")
    assert one != redis_identity("redis+cluster://10.0.0.3:7000") != redis_identity("redis://10.0.0.1:7000/0")
