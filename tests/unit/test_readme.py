"""The README's worked examples say what the code does."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def test_readme_starts_with_the_two_set_up_commands() -> None:
    first_block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert first_block is not None
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines()]
    assert commands == ["pip install -e '.[demo]' && costwatch demo", "scripts/test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert [line for line in ci if line and not line.startswith("#")][-1] == "scripts/test"
    script = (REPO / "scripts" / "test").read_text(encoding="utf-8")
    assert "-m pip install -q -e '.[test]'" in script
    assert script.rstrip().endswith('exec "$python" -m pytest "$@"')


def test_manual_record_example(cw: Any) -> None:
    rec = cw.record(
        provider="openai",
        model="ft:gpt-4o-mini-2024-07-18:acme::x1",
        input_tokens=900,
        output_tokens=120,
        latency_s=0.8,
    )
    assert rec.cost_usd == Decimal("0.0004140")
    assert f"Decimal('{rec.cost_usd}')" in README
    assert rec.strategy == "fine_tuned"
    assert rec.price_source == "bundled"


def test_searches_example(cw: Any) -> None:
    rec = cw.record(
        provider="anthropic",
        model="claude-sonnet-4-5",
        input_tokens=900,
        output_tokens=300,
        web_searches=3,
    )
    assert rec.cost_usd == Decimal("0.0372")
    assert f"Decimal('{rec.cost_usd}')" in README


def _python_block_with(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README, re.S) if marker in b]
    assert len(blocks) == 1, marker
    return str(blocks[0])


def test_own_sink_example_receives_every_call_and_request(monkeypatch: pytest.MonkeyPatch) -> None:
    import costwatch

    for name, value in {"STRICT": "true", "PROMETHEUS": "false", "WARM_UP": "false"}.items():
        monkeypatch.setenv(f"COSTWATCH_{name}", value)
    namespace: dict[str, Any] = {"costwatch": costwatch}
    exec(_python_block_with("class RequestCosts(costwatch.BaseSink)"), namespace)
    costs = namespace["costs"]
    try:
        with costwatch.request("answer_question", strategy="rag"):
            first = costwatch.record(
                provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=100
            )
            second = costwatch.record(
                provider="openai", model="text-embedding-3-small", input_tokens=40
            )
        costwatch.record(provider="openai", model="no-such-model", input_tokens=10)
    finally:
        costwatch._configure.shutdown()
    assert first is not None and second is not None
    assert first.cost_usd == Decimal("0.00021")  # 1000 x $0.15/M + 100 x $0.60/M
    assert second.cost_usd is not None
    assert costs.by_pipeline == {"answer_question": [first.cost_usd + second.cost_usd]}
    assert costs.unpriced == {"no-such-model"}
