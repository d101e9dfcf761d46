"""The settlement queue's items (one call's settlement, a batch of them, an alert event, a
registration) and the ``Reservation`` a call holds until it queues its settlement.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol

from costwatch._core.failopen import errors
from costwatch.budgets._alerts import AlertKind
from costwatch.budgets._backend import Settlement
from costwatch.budgets._money import to_nano

if TYPE_CHECKING:
    from costwatch.budgets._definition import Budget


class SettleQueue(Protocol):
    """Where a ``Reservation`` queues its settlement (the registry's ``SettlementWorker``)."""

    pending: deque[Pending]
    clock: Callable[[], float]

    def wake(self) -> None: ...


WRITER_TTL_S = 86_400
"""How long the store remembers a process's last applied settlement batch after its last one:
a batch retried within that time (Redis unreachable for up to a day) is not charged twice."""


class Reservation:
    """Worst-case holds made before a call; :meth:`settle` replaces them with the actual cost."""

    __slots__ = ("_queue", "_holds", "_settled")

    def __init__(self, queue: SettleQueue, holds: list[tuple[Budget, str]]) -> None:
        self._queue = queue
        self._holds = holds
        self._settled = False

    @property
    def budgets(self) -> tuple[str, ...]:
        return tuple(b.name for b, _ in self._holds)

    def settle(self, actual_cost: Decimal | None) -> None:
        """Queue the settlement (never a round trip on the caller's path).  Idempotent.

        ``None`` (unpriced call) releases the holds and charges nothing.
        """
        if self._settled:
            return
        self._settled = True
        try:
            cost = to_nano(actual_cost) if actual_cost is not None and actual_cost > 0 else 0
            queue = self._queue
            now = queue.clock()
            append = queue.pending.append
            queued = False
            for budget, settle_id in self._holds:
                if settle_id or cost:  # nothing held and nothing spent: nothing to send
                    append(QueuedSettle(budget, settle_id, cost, now))
                    queued = True
            if queued:
                queue.wake()
        except Exception as exc:
            errors.report("budget", exc)


@dataclass(slots=True, eq=False)
class QueuedSettle:
    """One call's settlement: release hold ``hold_id`` (if any) and charge ``cost``."""

    budget: Budget
    hold_id: str
    cost: int
    now: float


@dataclass(slots=True, eq=False)
class QueuedGroup:
    """Settlements of one budget and bucket, sent as one idempotent batch.  A batch that met
    an unreachable backend is retried as it is, with the same writer and batch number."""

    budget: Budget
    settlement: Settlement
    now: float


class RetryLater(Exception):
    def __init__(self, items: list[Pending]) -> None:
        super().__init__("budget backend unavailable")
        self.items = items


@dataclass(slots=True, eq=False)
class QueuedEvent:
    """An alert-worthy moment seen on the call path (warn budget exceeded, call blocked, state
    found lost), at ``now_ms`` by the backend's clock."""

    budget: Budget
    kind: AlertKind
    spent: int
    oldest: int
    now_ms: int


@dataclass(slots=True, eq=False)
class QueuedRegister:
    """A budget to publish (its definition) and read again."""

    budget: Budget
    now: float


Pending = QueuedSettle | QueuedGroup | QueuedEvent | QueuedRegister
