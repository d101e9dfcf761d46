"""A real ``prometheus`` (Debian package) on a free loopback port with a temporary data dir,
optionally scraping targets every second; started and stopped by its own pid."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests._fixtures.redis_proc import free_port


class PrometheusProcess:
    """A real Prometheus with a temp data dir, optionally scraping ``targets`` every second."""

    def __init__(self, targets: Sequence[str] = ()) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is not installed (apt-get install prometheus)")
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="costwatch-prometheus-"))
        self.targets = tuple(targets)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s", "scrape_configs:"]
        if self.targets:
            lines += [
                "  - job_name: costwatch",
                "    static_configs:",
                "      - targets: [" + ", ".join(f'"{t}"' for t in self.targets) + "]",
            ]
        else:
            lines[-1] += " []"
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        config = self.dir / "prometheus.yml"
        config.write_text(self._config(), encoding="utf-8")
        self.log = (self.dir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=0.5) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"prometheus did not become ready on port {self.port}: "
            f"{(self.dir / 'prometheus.log').read_text(errors='replace')[-2000:]}"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
        if hasattr(self, "log"):
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def api(self, path: str, **params: str) -> tuple[int, dict[str, Any]]:
        """GET from the HTTP API; returns (HTTP status, decoded body) for errors too."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def query(self, expr: str) -> tuple[int, dict[str, Any]]:
        return self.api("/api/v1/query", query=expr)
