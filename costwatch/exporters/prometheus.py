"""The Prometheus exporter: ``PrometheusSink`` and ``serve_metrics``.

Two recording paths behind one sink, chosen once at construction:

* single process (the default): records add to in-process totals, plain successful calls reach
  them through the runtime's ``Tally`` (priced at the scrape), and a collector renders them at
  scrape time;
* prometheus-client multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set before the process
  imported ``prometheus_client``; gunicorn-style workers): plain prometheus-client metrics whose
  values live in the workers' mmap files, with label children cached per label combination.
  No custom collector is registered on that path.

Neither path exposes ``_created`` series: the collector never builds them and multiprocess files
do not store them.  prometheus-client's ``disable_created_metrics()`` is deliberately not called:
it is process-wide and would also strip them from the host application's own metrics.

Either way a registry carries one set of costwatch metrics: sinks built again on the same
registry (``configure()`` called twice) reuse it, so totals keep accumulating like any
Prometheus counter and nothing is registered twice.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol, cast
from wsgiref.simple_server import WSGIServer

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server, values

from costwatch._core.errors import ConfigError
from costwatch._core.forks import new_lock
from costwatch._core.labels import LabelGuard
from costwatch._core.sink import ForwardingSink, Sink

if TYPE_CHECKING:
    from costwatch.accounting._tally import Tally
    from costwatch.exporters._aggregate import SpendAggregate

__all__ = ["MetricsServer", "PrometheusSink", "is_multiprocess", "serve_metrics"]


def is_multiprocess() -> bool:
    """Whether prometheus-client writes values to ``PROMETHEUS_MULTIPROC_DIR`` in this process.

    prometheus-client decides once, when it is first imported, from the environment.
    """
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class _Backend(Sink, Protocol):
    service: str
    guard: LabelGuard


_states: weakref.WeakKeyDictionary[CollectorRegistry, tuple[bool, _Backend]] = (
    weakref.WeakKeyDictionary()
)
_states_lock = new_lock()


def _backend_for(
    registry: CollectorRegistry,
    multiprocess: bool,
    service: str,
    label_limits: Mapping[str, int] | None,
) -> _Backend:
    with _states_lock:
        state = _states.get(registry)
        if state is not None:
            mode, backend = state
            if mode != multiprocess:
                raise ConfigError(
                    "multiprocess",
                    multiprocess,
                    "this registry already carries costwatch metrics of the other mode",
                )
            backend.service = service
            backend.guard.set_limits(label_limits)
            return backend
        guard = LabelGuard(label_limits)
        new: _Backend
        if multiprocess:
            from costwatch.exporters._prom_client import ClientMetrics

            new = ClientMetrics(registry, guard, service)
        else:
            from costwatch.exporters._aggregate import SpendAggregate
            from costwatch.exporters._prom_collector import AggregateCollector

            aggregate = SpendAggregate(service, guard)
            registry.register(AggregateCollector(aggregate))
            new = aggregate
        _states[registry] = (multiprocess, new)
        return new


class PrometheusSink(ForwardingSink):
    """Every costwatch event as Prometheus metrics, under the names of ``names.py``.

    ``registry`` defaults to prometheus-client's global ``REGISTRY``.  ``label_limits`` caps the
    distinct values of free-form labels (tenant, feature, model ...; see ``_core.labels``).
    ``multiprocess=None`` follows ``PROMETHEUS_MULTIPROC_DIR``; ``True`` requires it.
    """

    component = "exporter.prometheus"

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        service: str,
        label_limits: Mapping[str, int] | None = None,
        multiprocess: bool | None = None,
    ) -> None:
        active = is_multiprocess()
        if multiprocess is None:
            multiprocess = active
        elif multiprocess and not active:
            raise ConfigError(
                "multiprocess",
                True,
                "set PROMETHEUS_MULTIPROC_DIR to an existing directory before the process "
                "imports prometheus_client (before it starts, e.g. in the gunicorn environment)",
            )
        self.service = service
        self.multiprocess = multiprocess
        self.registry = REGISTRY if registry is None else registry
        self._target = self._backend = _backend_for(
            self.registry, multiprocess, service, label_limits
        )
        self._aggregate = None if multiprocess else cast("SpendAggregate", self._backend)

    def attach(self, tally: Tally) -> bool:
        """Export the calls ``tally`` holds too; ``False`` (not attached) under multiprocess
        mode, whose per-worker files need every call as it happens."""
        if self._aggregate is None:
            return False
        self._aggregate.attach(tally)
        return True

    def detach(self, tally: Tally) -> None:
        """Take in the last of ``tally`` and stop reading it (its runtime is being replaced)."""
        if self._aggregate is not None:
            self._aggregate.detach(tally)

    @property
    def guard(self) -> LabelGuard:
        return self._backend.guard


def metrics_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry ``/metrics`` should render: under multiprocess mode, every worker's files."""
    if registry is not None:
        return registry
    if is_multiprocess():
        from prometheus_client import multiprocess

        aggregated = CollectorRegistry()
        multiprocess.MultiProcessCollector(aggregated)  # type: ignore[no-untyped-call]
        return aggregated
    return REGISTRY


class MetricsServer(NamedTuple):
    """The running ``/metrics`` endpoint: unpacks as ``(server, thread)``."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_port)

    def shutdown(self) -> None:
        """Stop serving and close the listening socket."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def serve_metrics(
    port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None
) -> MetricsServer:
    """Serve ``/metrics`` from a daemon thread; returns ``MetricsServer(server, thread)``.

    ``port=0`` picks a free port (``.port`` tells which); ``.shutdown()`` stops it.  Under
    multiprocess mode (and no explicit ``registry``) it serves the aggregate of every worker's
    values in ``PROMETHEUS_MULTIPROC_DIR``, so it can run in any one process (or a sidecar).
    """
    if is_multiprocess() and not os.path.isdir(os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")):
        raise ConfigError(
            "PROMETHEUS_MULTIPROC_DIR",
            os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
            "must be an existing directory",
        )
    server, thread = start_http_server(port, addr=addr, registry=metrics_registry(registry))
    return MetricsServer(server, thread)
