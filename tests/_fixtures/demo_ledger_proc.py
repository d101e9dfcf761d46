"""The demo workload in its own process, behind ``/metrics`` and writing a record log.

    python -m tests._fixtures.demo_ledger_proc RECORD_LOG REQUESTS

Prints one JSON line ``{"port": P}`` once ``/metrics`` is served, then waits for a line on
stdin before running the workload (so a scraper can see it from zero); then prints
``{"comparison": ...}``: the demo's closing comparison (``analysis.as_dict``) computed from
this process's ``summary()``.  Serves ``/metrics`` until stdin closes, then shuts down.
"""

from __future__ import annotations

import json
import sys

from prometheus_client import CollectorRegistry

import costwatch
from costwatch import analysis
from costwatch._demo.comparison import DEMO_SCENARIOS
from costwatch._demo.workload import Workload
from costwatch.exporters.recordlog import RecordLogSink


def main(record_log: str, requests: int) -> None:
    registry = CollectorRegistry()
    sink = RecordLogSink(record_log)
    costwatch.configure(service="demo", strict=True, registry=registry, warm_up=False, sinks=[sink])
    server = costwatch.serve_metrics(0, registry=registry)
    print(json.dumps({"port": server.port}), flush=True)
    sys.stdin.readline()
    Workload(seed=7).run(requests)
    comparison = analysis.compare(
        analysis.traffic_from_summary(costwatch.summary()),
        analysis.load_scenarios(DEMO_SCENARIOS),
    )
    sink.close()
    print(json.dumps({"comparison": analysis.as_dict(comparison)}), flush=True)
    sys.stdin.read()
    server.shutdown()
    costwatch.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
