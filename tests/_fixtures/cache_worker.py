"""One real process of a cross-process cache test: ``python -m tests._fixtures.cache_worker``.

It configures costwatch on a Redis URL (standalone or ``redis+cluster://``), waits for a wall
clock start time shared by every worker, looks up ``--keys`` keys from ``--threads`` threads
through a ``RetrievalCache`` over a module-level function, and prints one JSON line: how many
times the function ran here and the lookup results.  ``run_workers`` starts several at once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

_runs = 0
_runs_lock = threading.Lock()
_work_s = 0.0


def search(query: str) -> list[str]:
    """The cached function: counts its runs in this process."""
    global _runs
    with _runs_lock:
        _runs += 1
    if _work_s:
        time.sleep(_work_s)
    return ["doc about " + query]


def main() -> None:
    global _work_s
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--start-at", type=float, required=True)
    parser.add_argument("--keys", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--work-s", type=float, default=0.0)
    parser.add_argument("--lock-timeout", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    _work_s = args.work_s

    import costwatch
    from costwatch.cache._retrieval_cache import RetrievalCache, last_lookup_var

    costwatch.configure(
        service="test",
        redis_url=args.url,
        prometheus=False,
        strict=True,
        redis_timeout_s=2.0,
        warm_up=False,
    )
    cached = RetrievalCache(ttl=60, lock_timeout=args.lock_timeout).wrap(search, source="kb")
    results: Counter[str] = Counter()
    lock = threading.Lock()
    keys = [f"question {i}" for i in range(args.keys)]
    random.Random(args.seed).shuffle(keys)

    def lookups(offset: int) -> None:
        for i in range(len(keys)):
            value = cached(keys[(i + offset) % len(keys)])
            assert value == ["doc about " + keys[(i + offset) % len(keys)]], value
            with lock:
                results[last_lookup_var.get()] += 1

    threads = [
        threading.Thread(target=lookups, args=(t * len(keys) // args.threads,))
        for t in range(args.threads)
    ]
    while time.time() < args.start_at:
        time.sleep(0.001)
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"runs": _runs, "results": dict(results)}))


def run_workers(url: str, processes: int, **options: Any) -> list[dict[str, Any]]:
    """Start ``processes`` workers released together; what each printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start_at = time.time() + 2.0 + 0.5 * processes  # every interpreter is up by then
    flags = [f"--{name.replace('_', '-')}={value}" for name, value in options.items()]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests._fixtures.cache_worker",
                url,
                f"--start-at={start_at}",
                *flags,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            cwd=REPO,
        )
        for _ in range(processes)
    ]
    outputs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outputs.append(json.loads(out.strip().splitlines()[-1]))
    return outputs


if __name__ == "__main__":
    main()
