"""The ``costwatch`` command: demo, prices, estimate and budget status, run as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def costwatch(
    *args: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("COSTWATCH_")}
    base["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [sys.executable, "-m", "costwatch", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=REPO,
        timeout=120,
    )


def test_demo_prints_the_cost_table_with_every_strategy_and_the_cache() -> None:
    run = costwatch("demo", "--requests", "60", "--seed", "3")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for section in (
        "Spend by strategy",
        "Spend by stage",
        "Spend by model",
        "Cost per request",
        "Retrieved context in generation input",
        "Retrieval cache",
        "TOTAL $",
    ):
        assert section in out
    for strategy in ("rag", "fine_tuned", "hybrid", "base"):
        assert f"\n{strategy} " in out
    assert "real openai/anthropic SDK objects" in run.stderr
    assert "60/60 requests" in run.stderr


def test_demo_is_reproducible_with_a_seed_and_its_json_adds_up() -> None:
    first = json.loads(costwatch("demo", "--requests", "40", "--seed", "11", "--json").stdout)
    second = json.loads(costwatch("demo", "--requests", "40", "--seed", "11", "--json").stdout)
    assert first["by_model"].keys() == second["by_model"].keys()
    assert first["total"]["tokens"] == second["total"]["tokens"]
    total = Decimal(first["total"]["cost_usd"])
    assert sum(Decimal(v["cost_usd"]) for v in first["by_strategy"].values()) == total
    assert sum(Decimal(v["cost_usd"]) for v in first["by_stage"].values()) == total
    assert sum(v["requests"] for v in first["by_pipeline"].values()) == 40
    assert first["cache"]["kb"]["hits"] > 0
    assert Decimal(first["cache"]["kb"]["saved_usd"]) > 0


def test_prices_prints_the_resolved_price_and_its_source() -> None:
    run = costwatch("prices", "gpt-4o-mini")
    assert run.returncode == 0
    assert "genai-prices" in run.stdout
    assert "0.15" in run.stdout and "0.6" in run.stdout
    ft = costwatch("prices", "ft:gpt-4o-mini-2024-07-18:acme::x1")
    assert "bundled" in ft.stdout and "fine-tuned  yes" in ft.stdout


def test_prices_for_an_unknown_model_fails_and_says_how_to_add_it() -> None:
    run = costwatch("prices", "house-model-7")
    assert run.returncode == 1
    assert "no price known" in run.stdout
    assert "costwatch_unpriced_requests_total" in run.stdout


def test_user_price_file_wins(tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  - {provider: openai, model: gpt-4o-mini, input_per_mtok: 0.1,"
        " output_per_mtok: 0.4}\n",
        encoding="utf-8",
    )
    run = costwatch("prices", "gpt-4o-mini", "--provider", "openai", "--prices", str(prices))
    assert run.returncode == 0
    assert "user" in run.stdout


def test_estimate_reads_the_prompt_from_stdin() -> None:
    run = costwatch(
        "estimate",
        "--model",
        "gpt-4o-mini",
        "--output-tokens",
        "200",
        stdin="Summarise the refund policy in three bullet points.",
    )
    assert run.returncode == 0, run.stderr
    assert "tiktoken" in run.stdout
    assert "$0.00012" in run.stdout  # 200 output tokens at $0.60/M, plus a few input tokens


def test_budget_status_without_redis_says_so_and_fails() -> None:
    run = costwatch("budget", "status")
    assert run.returncode == 1
    assert "no Redis configured" in run.stderr


def test_budget_status_fails_when_redis_is_unreachable() -> None:
    from tests._fixtures.redis_proc import free_port

    run = costwatch("budget", "status", "--redis-url", f"redis://:pw@127.0.0.1:{free_port()}/0")
    assert run.returncode == 1  # a cron job or a health check sees the failure
    assert "is unreachable" in run.stderr
    assert "pw" not in run.stderr and run.stdout == ""


def test_budget_status_lists_budgets_registered_in_redis(redis_server: str) -> None:
    script = (
        "import costwatch\n"
        f"costwatch.configure(service='cli', redis_url={redis_server!r}, prometheus=False,"
        " warm_up=False)\n"
        "costwatch.budget('support-daily', limit_usd=50, window='day', match={'team': 'support'})\n"
        "with costwatch.tags(team='support'):\n"
        "    costwatch.record(provider='openai', model='gpt-4o-mini', input_tokens=1000000)\n"
        "costwatch._configure.shutdown()\n"
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    run = costwatch("budget", "status", "--redis-url", redis_server)
    assert run.returncode == 0, run.stderr
    assert "support-daily" in run.stdout
    assert "0.15" in run.stdout  # 1M input tokens of gpt-4o-mini


@pytest.mark.parametrize("argv", [["demo", "--requests", "x"], ["estimate"], ["nothing"]])
def test_bad_arguments_exit_with_usage(argv: list[str]) -> None:
    run = costwatch(*argv)
    assert run.returncode == 2
    assert "usage: costwatch" in run.stderr
