"""The holder of the process's runtime, like ``opentelemetry.metrics.get_meter_provider``.

It holds the current runtime and imports no builders: the composition root
(``costwatch._configure``) registers the factory that builds a default runtime from the
environment, and installs the runtime ``configure()`` builds.  Code below the composition root
reads the runtime here, so no layer imports the layer that wires them together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from costwatch._core.failopen import errors
from costwatch._core.forks import new_rlock

if TYPE_CHECKING:
    from costwatch._configure import Runtime as Runtime

_lock = new_rlock()
current: Runtime | None = None
"""The installed runtime (None before first use): the call path reads it as
``runtime.current or runtime.runtime()``, which skips a function call."""

_default_factory: Callable[[], Runtime] | None = None


def set_default_factory(factory: Callable[[], Runtime]) -> None:
    """Register how a default runtime is built on first use (the composition root does)."""
    global _default_factory
    _default_factory = factory


def runtime() -> Runtime:
    """The current runtime; a default one (from ``COSTWATCH_*``) on first use."""
    rt = current
    if rt is None:
        with _lock:
            rt = current
            if rt is None:
                if _default_factory is None:  # only when costwatch._configure was never imported
                    raise RuntimeError("costwatch is not configured: import costwatch first")
                rt = _default_factory()
                install(rt)
    return rt


def install(new: Runtime | None) -> Runtime | None:
    """Make ``new`` the current runtime (None drops it); returns the one it replaced."""
    global current
    with _lock:
        old = current
        if new is not None:
            errors.strict = new.settings.strict
            errors.listeners = [sink.on_internal_error for sink in new.sinks]
        current = new
    return old
