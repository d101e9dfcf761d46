"""The one Redis client factory (``costwatch._core.redis``) against real Redis servers."""

from __future__ import annotations

import asyncio
import os
import warnings

import redis
import redis.asyncio.cluster
import redis.cluster

from costwatch._core.redis import (
    LoopClients,
    connect,
    connect_async,
    is_cluster_client,
    node_url,
)
from tests._fixtures.redis_cluster import RedisCluster


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_asyncio_clients_get_the_asyncio_retry_so_redis_py_warns_nothing(
    redis_server: str,
) -> None:
    async def ping() -> None:
        client = connect_async(redis_server, timeout_s=1.0)
        assert await client.ping()
        await client.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(ping())


def test_a_client_per_loop_is_closed_with_its_loop(redis_server: str) -> None:
    clients = LoopClients(lambda: connect_async(redis_server, timeout_s=1.0))

    async def ping() -> None:
        assert await clients.get().ping()

    asyncio.run(ping())
    before = open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(300):
            asyncio.run(ping())  # shutdown_asyncgens closes the loop's client
    assert open_fds() <= before
    assert len(clients) <= 1


def test_a_loop_closed_by_hand_has_its_client_released_by_the_next_loop(
    redis_server: str,
) -> None:
    clients = LoopClients(lambda: connect_async(redis_server, timeout_s=1.0))

    async def ping() -> None:
        assert await clients.get().ping()

    before = open_fds()
    for _ in range(50):
        loop = asyncio.new_event_loop()
        loop.run_until_complete(ping())
        loop.close()  # no shutdown_asyncgens: the client is left behind
    assert open_fds() <= before + 1  # the last loop's socket, released by the next one
    assert len(clients) == 1


def test_cluster_clients_from_a_cluster_url_or_the_cluster_flag(
    redis_cluster: RedisCluster,
) -> None:
    assert node_url(redis_cluster.url) == redis_cluster.node_url
    for client in (
        connect(redis_cluster.url, timeout_s=1.0),
        connect(redis_cluster.node_url, timeout_s=1.0, cluster=True),
    ):
        assert isinstance(client, redis.cluster.RedisCluster) and is_cluster_client(client)
        client.set("{t}:k", "v")
        assert client.get("{t}:k") == b"v"
        client.close()
    plain = connect(redis_cluster.node_url, timeout_s=1.0)
    assert isinstance(plain, redis.Redis) and not is_cluster_client(plain)
    plain.close()

    async def run() -> None:
        client = connect_async(redis_cluster.url, timeout_s=1.0)
        assert isinstance(client, redis.asyncio.cluster.RedisCluster)
        assert await client.get("{t}:k") == b"v"
        await client.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(run())
