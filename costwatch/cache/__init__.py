"""The retrieval cache: ``RetrievalCache`` and the storage protocol a custom backend implements.

``CacheBackend`` (with ``asyncio()`` returning an ``AsyncCacheBackend``) is what
``RetrievalCache(backend=...)`` accepts; ``MemoryBackend`` and ``RedisBackend`` are the two
implementations costwatch ships, and ``BackendError`` is what a backend raises when its store
cannot be reached (the cache then calls through and counts ``result="error"``).
"""

from costwatch.cache._backend import (
    AsyncCacheBackend,
    BackendError,
    CacheBackend,
    MemoryBackend,
    RedisBackend,
)
from costwatch.cache._retrieval_cache import RetrievalCache

__all__ = [
    "AsyncCacheBackend",
    "BackendError",
    "CacheBackend",
    "MemoryBackend",
    "RedisBackend",
    "RetrievalCache",
]
