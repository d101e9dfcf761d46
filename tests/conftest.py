"""Fixtures shared by the whole suite: fresh costwatch globals in strict mode, a real Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from costwatch.cache._backend import sync_trackers
from tests._fixtures.capture import CaptureSink
from tests._fixtures.redis_cluster import RedisCluster
from tests._fixtures.redis_proc import RedisProcess
from tests._fixtures.tiktoken_cache import tiktoken_cache_dir  # noqa: F401 - session fixture

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
"""LiteLLM would fetch its price map from the network when first imported: never in tests."""


@pytest.fixture(scope="session", autouse=True)
def _offline_tiktoken(tiktoken_cache_dir: str) -> str:  # noqa: F811
    """tiktoken reads its encodings from a cache seeded from bpe-openai: never the network."""
    return tiktoken_cache_dir


@pytest.fixture(scope="session")
def redis_process() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    proc.start()
    yield proc
    proc.cleanup()


@pytest.fixture
def redis_server(redis_process: RedisProcess) -> Iterator[str]:
    """URL of a real Redis, empty at the start of each test (REDIS_URL when set)."""
    url = os.environ.get("REDIS_URL")
    if url:
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
        sync_trackers()
        yield url
        return
    if redis_process.proc is None or redis_process.proc.poll() is not None:
        redis_process.start()
    redis_process.flush()
    sync_trackers()  # the flush reached every generation this process tracks
    yield redis_process.url


@pytest.fixture
def capture() -> CaptureSink:
    """Every record, request, cache and budget event of the test (wired in by ``cw``)."""
    return CaptureSink()


@pytest.fixture
def cw(capture: CaptureSink) -> Iterator[Any]:
    """costwatch configured afresh for one test: strict, no global Prometheus registry."""
    import costwatch

    costwatch.configure(
        service="test", strict=True, prometheus=False, otel=False, warm_up=False, sinks=[capture]
    )
    yield costwatch
    costwatch._configure.shutdown()


@pytest.fixture(scope="session")
def redis_cluster_process() -> Iterator[RedisCluster]:
    cluster = RedisCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def redis_cluster(redis_cluster_process: RedisCluster) -> RedisCluster:
    """A real 3-master Redis Cluster, empty and healthy at the start of each test."""
    for node in redis_cluster_process.nodes:
        if node.proc is None or node.proc.poll() is not None:
            node.start()
    redis_cluster_process.wait_ok()
    redis_cluster_process.flush()
    return redis_cluster_process
