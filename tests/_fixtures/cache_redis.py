"""What the cache's Redis tests share: costwatch configured on a Redis URL with a capturing
sink, and the entry keys a test's Redis holds."""

from __future__ import annotations

from typing import Any

from tests._fixtures.capture import CaptureSink


def configure_on(cw: Any, url: str, timeout_s: float = 2.0) -> CaptureSink:
    """costwatch (strict, no exporters) on ``url``; the sink that sees every event.

    The default timeout is generous: most tests are about semantics, not a slow machine.
    """
    capture = CaptureSink()
    cw.configure(
        service="test",
        strict=True,
        prometheus=False,
        otel=False,
        warm_up=False,
        redis_url=url,
        redis_timeout_s=timeout_s,
        sinks=[capture],
    )
    return capture


def is_entry_key(key: bytes) -> bool:
    """An entry, not a namespace generation or a stampede lock."""
    return key.startswith(b"cw:c:") and not key.endswith(b":gen") and b":lock:" not in key


def entry_keys(client: Any) -> list[bytes]:
    """The entry keys of a standalone Redis."""
    return [k for k in client.scan_iter(b"cw:c:*") if is_entry_key(k)]
