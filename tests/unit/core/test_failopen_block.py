"""FailOpen: costwatch's own failure before a provider call lets the call go ahead; a budget's
refusal, a cancellation and an interrupt stop it."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from costwatch._core.errors import BudgetExceeded
from costwatch._core.failopen import FailOpen, errors


@pytest.fixture
def lenient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Internal errors counted, not raised, as in production."""
    monkeypatch.setattr(errors, "strict", False)


def _refusal() -> BudgetExceeded:
    return BudgetExceeded(
        "daily", spent_usd=Decimal(5), limit_usd=Decimal(5), window="day", resets_at=None
    )


def test_an_internal_failure_is_reported_and_the_code_after_the_block_runs(lenient: None) -> None:
    def reserve() -> str:
        with FailOpen("test-failopen"):
            raise KeyError("costwatch's own bug")
        return "nothing held"

    before = errors.counts().get("test-failopen", 0)
    assert reserve() == "nothing held"
    assert errors.counts()["test-failopen"] == before + 1


def test_a_budget_refusal_propagates_unreported(lenient: None) -> None:
    refusal = _refusal()
    before = errors.counts().get("test-failopen", 0)
    with pytest.raises(BudgetExceeded) as raised, FailOpen("test-failopen"):
        raise refusal
    assert raised.value is refusal
    assert errors.counts().get("test-failopen", 0) == before


@pytest.mark.parametrize("exc", [asyncio.CancelledError(), KeyboardInterrupt()])
def test_what_is_not_an_exception_propagates(lenient: None, exc: BaseException) -> None:
    with pytest.raises(type(exc)), FailOpen("test-failopen"):
        raise exc


def test_strict_mode_raises_the_internal_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(errors, "strict", True)
    with pytest.raises(KeyError), FailOpen("test-failopen"):
        raise KeyError("costwatch's own bug")


def test_a_block_that_finishes_returns_its_value() -> None:
    def reserve() -> str:
        with FailOpen("test-failopen"):
            return "held"
        return "nothing held"

    assert reserve() == "held"
