"""costwatch beside its peers: the per-call overhead of instrumenting the same OpenAI chat call.

Each peer -- costwatch, OpenLIT, OpenLLMetry (``traceloop-sdk``) -- gets a virtualenv of its own,
created here under a cache directory (their pins conflict), with the ``openai`` SDK its pins
allow.  In each venv two worker processes run: one makes the bare call, the other the same call
with the peer set up as its README says.  The call goes through the real SDK to an
``httpx.MockTransport`` that returns a prebuilt response, so no HTTP noise hides the overhead.
Two shapes are timed: the plain call, and the README quickstart shape (tags + a request around
one call: ``costwatch.tags`` + ``costwatch.request``; OpenLIT ``start_trace`` + metadata;
OpenLLMetry association properties + ``@workflow``).  Rounds are interleaved across all workers;
the table shows medians, and the overhead is instrumented minus bare in the same venv.  Time is
the process's CPU time (every thread: a peer's export threads count), which a busy machine
disturbs far less than wall time.

The peers export what they collect (OTLP/HTTP spans and metrics) to a sink on loopback that
answers 200, as they would to a collector; telemetry is off (``TRACELOOP_TELEMETRY=false``,
``DO_NOT_TRACK=1``), and an audit hook in every worker refuses any connection or DNS look-up
that is not loopback, and counts it.

    python bench/peers.py [--calls 400] [--rounds 11] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
PEERS: dict[str, list[str]] = {
    "costwatch": ["-e", f"{REPO}[openai]"],  # editable: the tree as it is
    "OpenLIT": ["openlit==1.45.0"],
    "OpenLLMetry": ["traceloop-sdk==0.62.4"],
}
"""Peer -> pip arguments of its venv (beside ``openai`` and ``httpx``), pinned as measured."""
DISTRIBUTION = {"costwatch": "costwatch", "OpenLIT": "openlit", "OpenLLMetry": "traceloop-sdk"}
SHAPES = ("call", "quickstart")

MESSAGES = [{"role": "user", "content": "How do refunds work?"}]
TAGS = {"feature": "faq", "team": "support", "tenant": "acme"}


# --------------------------------------------------------------------------------------------
# The worker: runs inside a peer's venv (standard library, openai, httpx and the peer only).
# --------------------------------------------------------------------------------------------


def _no_network(blocked: list[str]) -> None:
    """Refuse every connection and DNS look-up that is not loopback (or a Unix socket)."""
    import ipaddress

    def loopback(host: object) -> bool:
        if host is None or isinstance(host, bytes) or host in ("localhost", ""):
            return True
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return False

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "socket.connect":
            address = args[1]
            host = address[0] if isinstance(address, tuple) else None
        elif event == "socket.getaddrinfo":
            host = args[0]
        else:
            return
        if not loopback(host):
            blocked.append(str(host))
            raise OSError(f"bench/peers.py: no network here (refused {host})")

    sys.addaudithook(hook)


def _pricing_file() -> str:
    """OpenLIT's price list, local: by default it downloads one at start-up."""
    path = Path(os.environ["PEERS_WORKDIR"]) / "openlit-pricing.json"
    path.write_text(
        json.dumps({"chat": {"gpt-4o-mini": {"promptPrice": 0.00015, "completionPrice": 0.0006}}})
    )
    return str(path)


def _set_up(peer: str, instrumented: bool, sink: str) -> dict[str, Any]:
    """The two shapes as callables, for ``peer`` set up (or not) as its README says."""
    import httpx
    from openai import OpenAI

    body = Path(os.environ["PEERS_WORKDIR"], "response.json").read_bytes()

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    client = OpenAI(
        api_key="bench",
        base_url="http://127.0.0.1:9/v1",
        max_retries=0,
        http_client=httpx.Client(transport=httpx.MockTransport(respond)),
    )

    def call() -> Any:
        return client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    if not instrumented:
        return {"call": call, "quickstart": call}
    if peer == "costwatch":
        import costwatch

        costwatch.configure(service="bench")  # the defaults: Prometheus metrics, ledger
        client = costwatch.instrument(client)

        def costwatch_quickstart() -> Any:
            with costwatch.tags(**TAGS), costwatch.request("answer_question", strategy="rag"):
                return call()

        return {"call": call, "quickstart": costwatch_quickstart}
    if peer == "OpenLIT":
        import openlit

        openlit.init(
            application_name="bench",
            otlp_endpoint=sink,
            pricing_json=_pricing_file(),
            collect_gpu_stats=False,
        )

        def openlit_quickstart() -> Any:
            with openlit.start_trace("answer_question") as trace:
                trace.set_metadata(TAGS)
                return call()

        return {"call": call, "quickstart": openlit_quickstart}
    if peer == "OpenLLMetry":
        from traceloop.sdk import Traceloop
        from traceloop.sdk.decorators import workflow

        Traceloop.init(app_name="bench", api_endpoint=sink, telemetry_enabled=False)

        @workflow(name="answer_question")
        def answer() -> Any:
            return call()

        def openllmetry_quickstart() -> Any:
            Traceloop.set_association_properties(TAGS)
            return answer()

        return {"call": call, "quickstart": openllmetry_quickstart}
    raise SystemExit(f"unknown peer {peer!r}")


def worker(peer: str, instrumented: bool, sink: str) -> None:
    """Line protocol on stdin/stdout: ``SHAPE N`` -> seconds per call; ``quit`` -> report."""
    from importlib.metadata import version

    # The protocol keeps the real stdout; anything a peer prints goes to stderr.
    protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    blocked: list[str] = []
    _no_network(blocked)
    shapes = _set_up(peer, instrumented, sink)
    for fn in shapes.values():  # warm up: imports, caches, price look-ups
        for _ in range(200):
            fn()
    versions = {"openai": version("openai"), peer: version(DISTRIBUTION[peer])}
    print(json.dumps({"ready": True, "versions": versions}), file=protocol, flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "quit":
            break
        fn, calls = shapes[command[0]], int(command[1])
        t0 = time.process_time()
        for _ in range(calls):
            fn()
        per_call = (time.process_time() - t0) / calls
        print(json.dumps({"per_call": per_call}), file=protocol, flush=True)
    print(json.dumps({"blocked": blocked}), file=protocol, flush=True)


# --------------------------------------------------------------------------------------------
# The driver: venvs, the loopback sink, interleaved rounds, the table.
# --------------------------------------------------------------------------------------------


class _Sink(BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps nothing: 200 and an empty (valid) protobuf body."""

    received: ClassVar[dict[str, int]] = {}

    def do_POST(self) -> None:
        size = int(self.headers.get("content-length") or 0)
        self.rfile.read(size)
        path = self.path.split("?")[0]
        _Sink.received[path] = _Sink.received.get(path, 0) + size
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def venv(cache: Path, peer: str) -> Path:
    """The peer's venv under ``cache``, created (or re-created when its requirements changed)."""
    requirements = [*PEERS[peer], "openai", "httpx"]
    home = cache / peer.lower()
    python = home / "bin" / "python"
    marker = home / "requirements.json"
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == requirements:
        return python
    print(f"creating the {peer} venv in {home} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)  # an old pip's resolver gives up
    subprocess.run([*pip, *requirements], check=True)
    marker.write_text(json.dumps(requirements))
    return python


class Worker:
    def __init__(self, python: Path, peer: str, instrumented: bool, sink: str, env: dict[str, str]):
        self.peer, self.instrumented = peer, instrumented
        self.log = Path(env["PEERS_WORKDIR"]) / f"{peer.lower()}-{int(instrumented)}.log"
        log = self.log.open("w")
        self.proc = subprocess.Popen(
            [str(python), __file__, "--worker", peer, "--sink", sink]
            + (["--instrumented"] if instrumented else []),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            cwd=env["PEERS_WORKDIR"],
        )
        self.versions: dict[str, str] = self._read()["versions"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.peer} worker died: see {self.log}")
        result: dict[str, Any] = json.loads(line)
        return result

    def time(self, shape: str, calls: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{shape} {calls}\n")
        self.proc.stdin.flush()
        return float(self._read()["per_call"])

    def close(self) -> list[str]:
        assert self.proc.stdin is not None
        self.proc.stdin.write("quit\n")
        self.proc.stdin.flush()
        blocked: list[str] = self._read()["blocked"]
        self.proc.wait(timeout=60)
        return blocked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=400, help="calls per round and worker")
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "costwatch"
        / "bench-peers",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--instrumented", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sink", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.instrumented, args.sink)
        return

    from _shared import CHAT_COMPLETION

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    (args.cache_dir / "response.json").write_text(json.dumps(CHAT_COMPLETION))
    pythons = {peer: venv(args.cache_dir, peer) for peer in PEERS}
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = f"http://127.0.0.1:{server.server_port}"
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        PEERS_WORKDIR=str(args.cache_dir),
        TRACELOOP_TELEMETRY="false",
        DO_NOT_TRACK="1",
        OTEL_EXPORTER_OTLP_ENDPOINT=sink,
        PYTHONHASHSEED="0",
    )
    workers = [
        Worker(pythons[peer], peer, instrumented, sink, env)
        for peer in PEERS
        for instrumented in (False, True)
    ]
    samples: dict[tuple[str, bool, str], list[float]] = {
        (w.peer, w.instrumented, shape): [] for w in workers for shape in SHAPES
    }
    rng = random.Random(1)
    for _ in range(args.rounds):
        order = [(w, shape) for w in workers for shape in SHAPES]
        rng.shuffle(order)  # interleaved: machine noise hits every variant alike
        for w, shape in order:
            samples[(w.peer, w.instrumented, shape)].append(w.time(shape, args.calls))
    blocked = {w.peer: w.close() for w in workers}
    server.shutdown()
    versions = {w.peer: w.versions for w in workers}

    med = {key: statistics.median(values) for key, values in samples.items()}
    print(
        f"CPU time per call of one OpenAI chat call through the real SDK on a prebuilt response, "
        f"median of {args.rounds} interleaved rounds of {args.calls} calls "
        f"(`python bench/peers.py --calls {args.calls} --rounds {args.rounds}`):\n"
    )
    print(
        "| peer | version (openai) | bare call | instrumented | overhead | ratio "
        "| quickstart shape | overhead | ratio |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for peer in PEERS:
        bare, plain = med[(peer, False, "call")], med[(peer, True, "call")]
        bare_q, shaped = med[(peer, False, "quickstart")], med[(peer, True, "quickstart")]
        v = versions[peer]
        print(
            f"| {peer} | {v[peer]} ({v['openai']}) | {bare * 1e6:.0f} µs | {plain * 1e6:.0f} µs "
            f"| {(plain - bare) * 1e6:+.1f} µs | {plain / bare:.2f} | {shaped * 1e6:.0f} µs "
            f"| {(shaped - bare_q) * 1e6:+.1f} µs | {shaped / bare_q:.2f} |"
        )
    exported = ", ".join(f"{path} {size:,} B" for path, size in sorted(_Sink.received.items()))
    print(f"\nExported to the loopback sink: {exported or 'nothing'}.")
    refused = {peer: hosts for peer, hosts in blocked.items() if hosts}
    print(f"Non-loopback connections refused: {refused or 'none'}.")


if __name__ == "__main__":
    main()
