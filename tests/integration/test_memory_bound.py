"""In-process memory is bounded by the label limits, whatever the tags and models of the calls.

One million decorated calls, each with a random tenant and feature and one in four with a model
never seen before, run in a fresh process (``bench/memory.py``'s workload, so the bench and the
test measure the same thing): the resident set must stay under ``RSS_BOUND_MB`` and a scrape and
``summary()`` must stay fast.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CALLS = 1_000_000
RSS_BOUND_MB = 50.0
"""Growth of the resident set over the million calls (before the fix: about 3.9 GB)."""
READ_BOUND_S = 1.0
"""CPU seconds of a scrape or a summary() of everything (before the fix: minutes).  CPU time,
not wall time: the machine running the suite may be shared."""

WORKLOAD = """
import json, sys
import memory
print(json.dumps(memory.run(int(sys.argv[1]))))
"""


@pytest.mark.timeout(1200)  # a million calls: minutes on a loaded machine
def test_a_million_calls_with_random_tags_and_models_stay_within_bounds() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", WORKLOAD, str(CALLS)],
        cwd=REPO / "bench",
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO)])},
        capture_output=True,
        text=True,
        timeout=1150,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])

    assert result["growth_mb"] < RSS_BOUND_MB, result
    assert result["scrape_cpu_s"] < READ_BOUND_S, result
    assert result["summary_cpu_s"] < READ_BOUND_S, result
