"""The exceptions costwatch raises into the host survive pickling: a worker of a process pool or
a task queue that raises one hands its parent the same exception, fields and message."""

from __future__ import annotations

import copy
import pickle
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from costwatch import BudgetExceeded, ConfigError
from costwatch.cache import BackendError


def _refusal() -> BudgetExceeded:
    return BudgetExceeded(
        "daily",
        spent_usd=Decimal("4.99"),
        limit_usd=Decimal(5),
        window="day",
        resets_at=datetime(2026, 12, 6, tzinfo=UTC),
        reason="backend unreachable",
    )


def _fields(exc: BaseException) -> tuple[object, ...]:
    return (type(exc), str(exc), exc.args, {k: v for k, v in vars(exc).items() if k != "__notes__"})


@pytest.mark.parametrize(
    "exc",
    [
        _refusal(),
        ConfigError("redis_url", "redis://user:secret@host:6379", "cannot connect"),
        BackendError("pool exhausted", down=False),
    ],
    ids=["BudgetExceeded", "ConfigError", "BackendError"],
)
def test_a_public_exception_pickles_and_copies_with_its_fields_and_message(
    exc: BaseException,
) -> None:
    assert _fields(pickle.loads(pickle.dumps(exc))) == _fields(exc)
    assert _fields(copy.copy(exc)) == _fields(exc)


def test_a_config_error_keeps_the_url_password_hidden_through_pickling() -> None:
    exc = ConfigError("redis_url", "redis://user:secret@host:6379", "cannot connect")
    again = pickle.loads(pickle.dumps(exc))
    assert "secret" not in str(again) and again.value == "redis://***@host:6379"


def _refused_in_a_worker() -> None:
    raise _refusal()


def test_a_budget_refusal_in_a_process_pool_worker_reaches_the_parent_as_itself() -> None:
    with ProcessPoolExecutor(max_workers=1) as pool:
        future = pool.submit(_refused_in_a_worker)
        with pytest.raises(BudgetExceeded) as raised:
            future.result(timeout=60)
    assert (raised.value.budget, raised.value.spent_usd, raised.value.reason) == (
        "daily",
        Decimal("4.99"),
        "backend unreachable",
    )
