"""The fault bench: how costwatch behaves where production hurts, printed from one run.

Runs, each in its own process (so neither measurement disturbs the other's memory or loop):

* ``bench/async_budget.py``: the wall time of 50 concurrent async calls under a budget with
  Redis 30 ms away (through a loopback latency proxy), against one bare async round trip
  (goal: at most 2 round trips for the whole batch, the event loop never blocked);
* ``bench/memory.py``: the resident-set growth per million calls with random tenant, feature
  and model tags (goal: at most 50 MB), and the time of a scrape and a ``summary()`` after.

    python bench/faults.py [--calls 1000000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> None:
    print(f"$ python bench/{script} {' '.join(args)}".rstrip(), flush=True)
    subprocess.run([sys.executable, str(HERE / script), *args], check=True, cwd=HERE)
    print(flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls for the memory part")
    args = parser.parse_args()
    run("async_budget.py")
    run("memory.py", "--calls", str(args.calls))


if __name__ == "__main__":
    main()
