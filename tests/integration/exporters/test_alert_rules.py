"""The Prometheus alert rules and the Alertmanager config, checked with the real tools.

``promtool`` checks and unit-tests the rules (every alert has cases that fire and cases that
stay silent); ``amtool`` checks the Alertmanager config and its routing; a real Alertmanager
shows grouping by budget, inhibition of warnings under a page, and webhook delivery.
A missing binary fails these tests: it never skips them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from costwatch.exporters import names
from tests._fixtures.redis_proc import free_port

REPO = Path(__file__).resolve().parents[3]
RULES = sorted((REPO / "exporters" / "prometheus" / "rules").glob("*.yml"))
RULE_TESTS = sorted((REPO / "exporters" / "prometheus" / "tests").glob("*.yml"))
ALERTMANAGER_CONFIG = REPO / "exporters" / "alertmanager" / "alertmanager.yml"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (Debian: prometheus / prometheus-alertmanager)")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)


def rules() -> list[dict[str, Any]]:
    found = []
    for path in RULES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found.extend(group["rules"])
    return found


def alert_names() -> set[str]:
    return {rule["alert"] for rule in rules() if "alert" in rule}


# --------------------------------------------------------------------------- promtool


def test_there_are_rule_files_and_rule_tests() -> None:
    assert [p.name for p in RULES] == [
        "costwatch-budget-targets.yml",
        "costwatch-budgets.yml",
        "costwatch-unit-economics.yml",
    ]
    assert RULE_TESTS
    assert {
        "CostwatchBudgetNearLimit",
        "CostwatchBudgetExhausted",
        "CostwatchBudgetBlockingCalls",
        "CostwatchBudgetStateLost",
        "CostwatchBudgetForecastExhausted",
        "CostwatchTeamBudgetBurnFast",
        "CostwatchTeamBudgetBurnHigh",
        "CostwatchTeamBudgetBurnSlow",
        "CostwatchFeatureBudgetBurnFast",
        "CostwatchFeatureBudgetBurnHigh",
        "CostwatchFeatureBudgetBurnSlow",
    } == alert_names()


def test_promtool_accepts_every_rule_file() -> None:
    result = run(binary("promtool"), "check", "rules", *map(str, RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    promtool = binary("promtool")
    runs = [  # the test files run side by side: each takes promtool a few seconds
        subprocess.Popen(
            [promtool, "test", "rules", path.name],
            cwd=path.parent,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for path in RULE_TESTS
    ]
    for path, proc in zip(RULE_TESTS, runs, strict=True):
        output, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"{path.name}:\n{output}"
        assert "SUCCESS" in output


def test_every_alert_has_a_firing_case_and_a_silent_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    assert alert_names() - firing == set()
    assert alert_names() - silent == set()


def test_every_alert_names_its_budget_and_severity() -> None:
    for rule in rules():
        if "alert" in rule:
            assert rule["labels"]["severity"] in {"page", "warning"}, rule["alert"]
            expr = rule["expr"]
            assert "by (budget)" in expr or '"budget"' in expr or "budget:" in expr, rule["alert"]


def test_rules_reference_only_contract_metrics_and_recorded_series() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    defined = names.defined_series_names()
    for rule in rules():
        tokens = set(re.findall(r"[A-Za-z_:][A-Za-z0-9_:]*", rule["expr"]))
        for token in tokens:
            if ":" in token:
                assert token in recorded, f"{token} is not recorded by any rule"
            elif token.startswith("costwatch_"):
                assert token in defined, f"{token} is not in costwatch/exporters/names.py"


# --------------------------------------------------------------------------- Alertmanager


def test_amtool_accepts_the_alertmanager_config() -> None:
    result = run(binary("amtool"), "check-config", str(ALERTMANAGER_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (("budget=support-monthly", "severity=page"), "costwatch-pages"),
        (("budget=team/support", "severity=warning"), "costwatch-warnings"),
        (("budget=team/support",), "costwatch-warnings"),
    ],
)
def test_pages_and_warnings_reach_their_receivers(labels: tuple[str, ...], receiver: str) -> None:
    result = run(
        binary("amtool"),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_CONFIG}",
        *labels,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


class WebhookReceiver:
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.posts.append((self.path, json.loads(body)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def snapshot(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.posts)


@pytest.fixture
def alertmanager() -> Iterator[tuple[str, WebhookReceiver]]:
    """The repo's alertmanager.yml with the webhook URLs pointed at a local receiver and the
    grouping delays shortened; everything else (routes, grouping, inhibition) unchanged."""
    executable = binary("prometheus-alertmanager")
    receiver = WebhookReceiver()
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    config["route"].update(group_wait="1s", group_interval="1s")
    for spec in config["receivers"]:
        for hook in spec["webhook_configs"]:
            hook["url"] = receiver.base + urllib.request.urlparse(hook["url"]).path
    workdir = tempfile.mkdtemp(prefix="costwatch-am-")
    config_path = Path(workdir) / "alertmanager.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    proc = subprocess.Popen(
        [
            executable,
            f"--config.file={config_path}",
            f"--storage.path={workdir}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(url + "/-/ready", timeout=0.5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("alertmanager did not start")
                time.sleep(0.1)
        yield url, receiver
    finally:
        proc.terminate()
        proc.wait(10)
        receiver.server.shutdown()
        receiver.server.server_close()
        shutil.rmtree(workdir, ignore_errors=True)


def post_alerts(url: str, alerts: list[dict[str, str]]) -> None:
    body = json.dumps(
        [{"labels": labels, "annotations": {"summary": "test"}} for labels in alerts]
    ).encode()
    request = urllib.request.Request(
        url + "/api/v2/alerts",
        data=body,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_alertmanager_groups_by_budget_and_silences_warnings_under_a_page(
    alertmanager: tuple[str, WebhookReceiver],
) -> None:
    url, receiver = alertmanager
    post_alerts(
        url,
        [
            {"alertname": "CostwatchBudgetExhausted", "budget": "support", "severity": "page"},
            {"alertname": "CostwatchBudgetNearLimit", "budget": "support", "severity": "warning"},
            {"alertname": "CostwatchBudgetNearLimit", "budget": "search", "severity": "warning"},
            {
                "alertname": "CostwatchBudgetForecastExhausted",
                "budget": "search",
                "severity": "warning",
            },
        ],
    )
    deadline = time.monotonic() + 20
    while len(receiver.snapshot()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.5)  # more group intervals: nothing else may arrive
    posts = receiver.snapshot()
    delivered = {
        (path, post["groupLabels"]["budget"]): sorted(
            a["labels"]["alertname"] for a in post["alerts"]
        )
        for path, post in posts
    }
    assert delivered == {
        ("/costwatch/pages", "support"): ["CostwatchBudgetExhausted"],
        ("/costwatch/warnings", "search"): [
            "CostwatchBudgetForecastExhausted",
            "CostwatchBudgetNearLimit",
        ],
    }
    # one notification per budget group, not one per alert
    assert len([p for p in posts if p[0] == "/costwatch/warnings"]) == 1
