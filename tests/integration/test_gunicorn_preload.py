"""The gunicorn example of ``docs/multiprocess.md``, run for real with ``--preload`` and 4 workers.

``--preload`` imports the app, so ``configure()`` and its warm-up, in the master, which forks
the workers at once.  Every request must answer, and the one ``/metrics`` endpoint must count
every call of every worker.  The app and the config are the documentation's own code blocks,
with loopback addresses, free ports and the test's Redis put in.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests._fixtures.redis_proc import free_port

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "multiprocess.md"
REQUESTS = 120
REQUEST_TIMEOUT_S = 15.0
"""Far below the worker timeout (60 s here): a hung worker is seen as a failed request."""

ROUTES = """

@costwatch.generation(provider="openai", model="gpt-4o-mini")
def answer(prompt):
    return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}


@app.route("/answer/<tenant>")
def route(tenant):
    with costwatch.tags(tenant=tenant, feature="faq"):
        answer("hello")
    return "answered"
"""


def documented_files(redis_url: str, port: int, metrics_port: int) -> dict[str, str]:
    """app.py and gunicorn.conf.py as docs/multiprocess.md shows them, made local."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    app = next(b for b in blocks if b.startswith("# app.py"))
    conf = next(b for b in blocks if b.startswith("# gunicorn.conf.py"))
    app = app.replace('"redis://redis:6379/0"', repr(redis_url)).replace("\n...\n", ROUTES)
    conf = conf.replace('"0.0.0.0:8080"', repr(f"127.0.0.1:{port}"))
    conf = conf.replace('serve_metrics(9464, addr="0.0.0.0")', f"serve_metrics({metrics_port})")
    assert repr(redis_url) in app and "def route" in app
    assert f"127.0.0.1:{port}" in conf and f"serve_metrics({metrics_port})" in conf
    return {"app.py": app, "gunicorn.conf.py": conf}


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "gunicorn exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@pytest.fixture
def gunicorn_app(redis_server: str, tmp_path: Path) -> Iterator[tuple[int, int]]:
    port, metrics_port = free_port(), free_port()
    for name, text in documented_files(redis_server, port, metrics_port).items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTWATCH_")}
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "metrics")  # before gunicorn starts
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(REPO)])
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "--timeout",
            "60",
            "-c",
            "gunicorn.conf.py",
            "app:app",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc)
        wait_for_port(metrics_port, proc)
        yield port, metrics_port
    finally:
        os.kill(proc.pid, signal.SIGINT)  # gunicorn's quick shutdown, master and workers
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate()


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_S) as resp:
        return str(resp.read().decode())


def test_every_request_to_preloaded_gunicorn_workers_answers(
    gunicorn_app: tuple[int, int],
) -> None:
    port, metrics_port = gunicorn_app

    def one(i: int) -> str:
        try:
            return get(f"http://127.0.0.1:{port}/answer/tenant-{i % 7}")
        except OSError as exc:
            return f"failed: {exc!r}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(one, range(REQUESTS)))

    assert [a for a in answers if a != "answered"] == []
    metrics = get(f"http://127.0.0.1:{metrics_port}/metrics")
    requests = sum(
        sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
        if sample.name == "costwatch_requests_total" and sample.labels["service"] == "support-bot"
    )
    assert requests == REQUESTS
