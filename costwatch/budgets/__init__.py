"""Budgets: windows, matching, pre-flight reservations, settlement and alerts.

What users name: :func:`budget` (also ``costwatch.budget``), :class:`Budget` and the
:class:`BudgetStatus` its ``status()`` returns, the :class:`BudgetAlert` an ``on_alert``
callback receives, and the policies' literal types.  The rest (registry, backends, worker) is
internal; ``docs/scaling.md`` says what the Redis backend guarantees.
"""

from costwatch.budgets._alerts import AlertKind, BudgetAlert
from costwatch.budgets._budget import budget
from costwatch.budgets._definition import (
    Action,
    BackendPolicy,
    Budget,
    BudgetStatus,
    StateLostPolicy,
)

__all__ = [
    "Action",
    "AlertKind",
    "BackendPolicy",
    "Budget",
    "BudgetAlert",
    "BudgetStatus",
    "StateLostPolicy",
    "budget",
]
