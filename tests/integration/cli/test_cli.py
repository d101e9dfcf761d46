"""The ``costwatch`` command: demo, prices, estimate and budget status, run as a user runs them."""

from __future__ import annotations

import json
import os
import pty
import socket
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


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


@pytest.fixture(scope="module")
def demo_run() -> subprocess.CompletedProcess[str]:
    """One demo run (a sub-cent support budget) that several tests read."""
    run = costwatch("demo", "--requests", "60", "--seed", "3", "--budget-usd", "0.004")
    assert run.returncode == 0, run.stderr
    return run


def test_demo_prints_the_cost_table_with_every_strategy_and_the_cache(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    run = demo_run
    out = run.stdout
    assert out.startswith("A request is one task of the app")  # defined before first used
    for section in (
        "Spend by strategy",
        "Spend by stage",
        "Spend by model",
        "Spend by retrieval source",
        "Cost per request",
        "Retrieved context in generation input",
        "Retrieval cache",
        "TOTAL $",
    ):
        assert section in out
    for strategy in ("rag", "fine_tuned", "hybrid", "base"):
        assert f"\n{strategy} " in out
    models = out.split("Spend by model")[1].split("Spend by retrieval source")
    assert "\nkb " not in models[0] and "\nkb " in models[1].split("Spend by feature")[0]
    assert "Next: `docker compose up`" in out
    assert "through the real openai and anthropic SDKs" in run.stderr
    assert "60/60 requests" in run.stderr  # the progress bar's last state
    assert "\x1b[" not in out + run.stderr  # piped: plain text


def test_demo_is_reproducible_with_a_seed_and_its_json_adds_up() -> None:
    first = json.loads(costwatch("demo", "--requests", "25", "--seed", "11", "--json").stdout)
    second = json.loads(costwatch("demo", "--requests", "25", "--seed", "11", "--json").stdout)
    assert first["by_model"].keys() == second["by_model"].keys()
    assert "kb" not in first["by_model"] and first["by_source"]["kb"]["calls"] > 0
    assert first["total"]["tokens"] == second["total"]["tokens"]
    total = Decimal(first["total"]["cost_usd"])
    assert sum(Decimal(v["cost_usd"]) for v in first["by_strategy"].values()) == total
    by_model_and_source = {**first["by_model"], **first["by_source"]}
    assert sum(Decimal(v["cost_usd"]) for v in by_model_and_source.values()) == total
    assert sum(Decimal(v["cost_usd"]) for v in first["by_stage"].values()) == total
    assert sum(v["requests"] for v in first["by_pipeline"].values()) == 25
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
        "costwatch.budget('tiny', limit_usd='0.004', window='1h', action='block')\n"
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
    tiny = next(line for line in run.stdout.splitlines() if line.startswith("tiny "))
    assert "$0.004 " in tiny, "a sub-cent limit is shown exactly, never as $0.00"
    readings = json.loads(
        costwatch("budget", "status", "--redis-url", redis_server, "--json").stdout
    )
    assert {r["budget"]: r["limit_usd"] for r in readings} == {
        "support-daily": "50",
        "tiny": "0.004",
    }


def assert_one_line_error(run: subprocess.CompletedProcess[str], *words: str) -> None:
    assert run.returncode != 0
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["demo", "--requests", "x"], ["'--requests'", "usage: costwatch demo", "--help"]),
        (["demo", "--rate", "0"], ["'--rate'", "0.0 is not in the range x>0"]),
        (["demo", "--budget-usd", "zero"], ["'--budget-usd'", "not an amount of dollars"]),
        (["estimate"], ["Missing option '--model'", "usage: costwatch estimate"]),
        (["estimate", "--model", "gpt-4o-mini", "--output-tokens", "-5"], ["-5 is not in"]),
        (["nothing"], ["No such command 'nothing'", "usage: costwatch"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line_naming_the_option_and_the_help(
    argv: list[str], words: list[str]
) -> None:
    run = costwatch(*argv, stdin="")
    assert run.returncode == 2
    assert_one_line_error(run, *words)


def test_estimate_of_a_missing_file_a_directory_or_a_binary_file_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    for path, problem in (
        (tmp_path / "missing.txt", "no such file"),
        (tmp_path, "is a directory"),
        (binary, "is not UTF-8 text"),
    ):
        run = costwatch("estimate", "--model", "gpt-4o-mini", str(path))
        assert run.returncode == 1
        assert_one_line_error(
            run, f"costwatch estimate: {path}", problem, "- to read it from stdin"
        )


def test_an_invalid_price_file_is_named_with_what_is_wrong(tmp_path: Path) -> None:
    broken = tmp_path / "prices.yaml"
    broken.write_text("models: [1, 2\n", encoding="utf-8")
    no_model = tmp_path / "nomodel.yaml"
    no_model.write_text("models:\n  - {provider: openai, input_per_mtok: 1}\n", encoding="utf-8")
    for path, problem in ((broken, "invalid YAML"), (no_model, "needs a model name")):
        for argv in (["prices", "gpt-4o"], ["estimate", "--model", "gpt-4o"]):
            run = costwatch(*argv, "--prices", str(path), stdin="hello")
            assert_one_line_error(run, f"price file {path}", problem, "fix the file")


def test_demo_serve_on_a_busy_port_says_which_port_and_what_to_do() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        run = costwatch("demo", "--serve", str(port), "--duration", "1")
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    assert (
        f"costwatch demo: port {port} on 127.0.0.1 is already in use; pass another"
        in (run.stderr.splitlines()[-1])
    )


def test_debug_shows_the_traceback_of_an_error(tmp_path: Path) -> None:
    run = costwatch("estimate", "--model", "gpt-4o-mini", str(tmp_path), "--debug")
    assert run.returncode == 1
    assert "Traceback" in run.stderr and run.stderr.splitlines()[-1].endswith("from stdin")


def test_a_reader_that_goes_away_ends_the_demo_quietly() -> None:
    """``costwatch demo | head``: the reader is gone before the tables are written."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("COSTWATCH_")}
    demo = subprocess.Popen(
        [sys.executable, "-m", "costwatch", "demo", "--requests", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**base, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert demo.stdout is not None and demo.stderr is not None
    demo.stdout.close()
    stderr = demo.stderr.read().decode()
    assert demo.wait(timeout=120) == 141  # as a shell reports a writer killed by SIGPIPE
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr and "Exception" not in stderr
    assert "20/20 requests" in stderr


def test_errors_are_coloured_on_a_terminal_and_plain_with_no_color(tmp_path: Path) -> None:
    def on_a_terminal(env: dict[str, str]) -> bytes:
        base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
        pid, fd = pty.fork()
        if pid == 0:  # the child: its stdout and stderr are the terminal
            os.chdir(REPO)
            argv = [sys.executable, "-m", "costwatch", "estimate", "--model", "m", str(tmp_path)]
            os.execve(sys.executable, argv, {**base, "PYTHONPATH": str(REPO), **env})
        out = b""
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        os.waitpid(pid, 0)
        return out

    coloured = on_a_terminal({"TERM": "xterm-256color"})
    plain = on_a_terminal({"TERM": "xterm-256color", "NO_COLOR": "1"})
    assert b"is a directory" in coloured and b"\x1b[" in coloured
    assert b"is a directory" in plain and b"\x1b[" not in plain


def test_every_command_that_prints_figures_prints_json(tmp_path: Path) -> None:
    price = json.loads(costwatch("prices", "gpt-4o-mini", "--json").stdout)
    assert price["provider"] == "openai"
    assert price["price"]["usd_per_million_tokens"]["input"] == "0.15"
    unknown = costwatch("prices", "house-model-7", "--json")
    assert unknown.returncode == 1 and json.loads(unknown.stdout)["price"] is None
    estimate = json.loads(
        costwatch(
            "estimate", "--model", "gpt-4o-mini", "--output-tokens", "200", "--json", stdin="Hi"
        ).stdout
    )
    assert estimate["output_tokens"] == 200 and estimate["method"] == "tiktoken"
    assert Decimal(estimate["total_cost_usd"]) == Decimal(estimate["input_cost_usd"]) + Decimal(
        "0.00012"
    )


def test_a_sub_cent_budget_is_shown_exactly_in_its_alerts(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    run = demo_run
    assert "of $0.004 (" in run.stderr and "$0.00 " not in run.stderr


def test_no_amount_that_is_not_zero_is_shown_as_zero(
    demo_run: subprocess.CompletedProcess[str],
) -> None:
    lines = demo_run.stdout.splitlines()
    # what the cache hits saved: a few thousandths of a cent (the embedding stage is no longer
    # tiny: it includes the demo's indexing run of its knowledge base)
    cache = lines[next(i for i, line in enumerate(lines) if line == "Retrieval cache") + 3]
    saved = cache.split()[-1]  # "kb  hits  misses  err/skip  hit rate  saved"
    assert saved.startswith("$0.0000") and Decimal(saved[1:]) > 0


def test_the_demo_without_the_sdks_says_how_to_install_them() -> None:
    hide = "import sys; sys.modules['anthropic'] = None; from costwatch.cli import main; "
    run = subprocess.run(
        [sys.executable, "-c", hide + "raise SystemExit(main(['demo']))"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 1
    assert_one_line_error(run, "anthropic not installed", "pip install 'costwatch[demo]'")


def test_prices_at_a_date_shows_the_price_in_force_then_with_its_window_and_source() -> None:
    run = costwatch("prices", "deepseek-chat", "--at", "2025-09-10")
    assert run.returncode == 0, run.stderr
    assert "from        https://api-docs.deepseek.com/quick_start/pricing" in run.stdout
    assert "in force    2025-09-05 16:00 UTC -> 2025-09-29 00:00 UTC" in run.stdout
    [row] = [r for r in map(str.split, run.stdout.splitlines()) if r[:2] == ["input", "always"]]
    assert row[:3] == ["input", "always", "0.56"]
    assert row[-6:] == [
        "2025-09-05",
        "16:00",
        "->",
        "2025-09-29",
        "00:00",
        "bundled:supersedes-genai-prices",
    ]
    rows = json.loads(costwatch("prices", "deepseek-chat", "--at", "2025-09-10", "--json").stdout)
    assert {(r["rate"], r["usd"]) for r in rows["rows"] if r["applies"] is None} >= {
        ("input", "0.56"),
        ("cache read", "0.07"),
        ("output", "1.68"),
    }
    assert {r["valid_from"] for r in rows["rows"]} == {"2025-09-05T16:00:00+00:00"}
    assert {r["source"] for r in rows["rows"]} == {"bundled:supersedes-genai-prices"}
    bad = costwatch("prices", "deepseek-chat", "--at", "last tuesday")
    assert_one_line_error(bad, "'--at'", "not a date")


def test_prices_shows_tiers_audio_and_processing_tiers_as_rows() -> None:
    claude = json.loads(
        costwatch("prices", "us.anthropic.claude-sonnet-4-5-20250929-v1:0", "--json").stdout
    )
    long_input = {
        r["usd"] for r in claude["rows"] if r["rate"] == "input" and r["applies"] is not None
    }
    assert long_input == {"6.6"}  # AWS regional: $6.60 above 200k prompt tokens
    audio = json.loads(costwatch("prices", "gpt-4o-audio-preview", "--json").stdout)
    assert {(r["rate"], r["usd"]) for r in audio["rows"]} >= {
        ("input (audio)", "40"),
        ("output (audio)", "80"),
    }
    flex = json.loads(costwatch("prices", "o4-mini", "--json").stdout)
    assert {r["applies"] for r in flex["rows"]} >= {"service_tier=flex", "batch=True"}


def test_a_model_only_in_the_price_file_needs_no_provider(tmp_path: Path) -> None:
    """The README's self-hosted example, as the README writes it."""
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  - {provider: self-hosted, model: llama-3-70b-ft, gpu_hour_usd: 4.10,"
        " tokens_per_second: 2500, fine_tuned: true}\n",
        encoding="utf-8",
    )
    shown = costwatch("prices", "llama-3-70b-ft", "--prices", str(prices))
    assert shown.returncode == 0, shown.stdout
    assert "provider    self-hosted" in shown.stdout and "source      user" in shown.stdout
    estimate = costwatch(
        "estimate", "--model", "llama-3-70b-ft", "--prices", str(prices), stdin="Hello there."
    )
    assert estimate.returncode == 0, estimate.stderr
    assert "provider       self-hosted" in estimate.stdout
    assert "price source   user" in estimate.stdout
