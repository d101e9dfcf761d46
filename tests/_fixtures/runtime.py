"""costwatch configured the way every test configures it: strict, no global registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests._fixtures.capture import CaptureSink


def configure_for_test(
    capture: CaptureSink,
    clock: Callable[[], float] | None = None,
    prices: dict[str, Any] | None = None,
) -> Any:
    """A fresh runtime: strict, no Prometheus/OTel, no warm-up thread, ``capture`` as a sink;
    ``clock`` and ``prices`` injected when given.  Returns the ``costwatch`` module."""
    import costwatch

    costwatch.configure(
        service="test",
        strict=True,
        prometheus=False,
        otel=False,
        warm_up=False,
        sinks=[capture],
        clock=clock,
        prices=prices,
    )
    return costwatch
