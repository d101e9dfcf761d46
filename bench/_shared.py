"""What the benchmarks share: an SDK-shaped response, a bare call, a timer, a private Redis."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import redis

CHAT_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 0,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "finish_reason": "stop",
            "message": {"role": "assistant", "content": "hello"},
        }
    ],
    "usage": {
        "prompt_tokens": 1200,
        "completion_tokens": 300,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}
"""The body of an OpenAI chat completion: 1200 prompt tokens (1024 cached), 300 completion."""


def make_response() -> Any:
    """A real ``openai`` ChatCompletion (1200 prompt tokens, 1024 cached, 300 completion)."""
    try:
        from openai.types.chat import ChatCompletion

        return ChatCompletion.model_validate(CHAT_COMPLETION)
    except ImportError:  # pragma: no cover - the benches run with the test extra installed
        from types import SimpleNamespace as Namespace

        return Namespace(
            model="gpt-4o-mini-2024-07-18",
            usage=Namespace(
                prompt_tokens=1200,
                completion_tokens=300,
                prompt_tokens_details=Namespace(cached_tokens=1024),
                completion_tokens_details=Namespace(reasoning_tokens=0),
            ),
        )


RESPONSE = make_response()


def bare(prompt: str) -> Any:
    """The floor: a call that returns the response at once."""
    return RESPONSE


def per_call(fn: Callable[[str], Any], calls: int) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn("hello")
    return (time.perf_counter() - t0) / calls


@contextmanager
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` when set, else a private ``redis-server`` on a free loopback port."""
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (or set REDIS_URL)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="costwatch-bench-")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(200):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
