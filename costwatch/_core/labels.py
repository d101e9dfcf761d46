"""Label values: made safe to export, and capped in how many distinct ones a label takes.

Tags, model and provider names come from the host application, so costwatch cannot trust them:

* a value must be exportable: a lone surrogate (``json.loads('"\\ud800"')``) cannot be encoded
  as UTF-8 and would fail every Prometheus scrape, and a 10 KB model name would be repeated in
  every series of the model.  ``clean_value`` replaces surrogates with U+FFFD and cuts a value
  at ``MAX_VALUE_LENGTH`` characters, and counts each repair as an internal error (component
  ``labels``);
* a label must not take unboundedly many values: one bug (a request id passed as the tenant)
  would create millions of series, and of in-process totals.  Past its limit a label's new
  values become ``other`` and every replacement is counted, so the overflow is visible
  (``costwatch_label_overflow_total{label}``).

The ``LabelGuard`` does both.  It sits below the totals (``accounting``) and the exporters, so
the runtime's tally, the ledger behind ``summary()`` and the exporters key their state by
guarded values: in-process memory is bounded by the label limits, whatever the tags.

The guard keeps the first ``limit`` distinct values it sees per label, for the life of the
process.  Under prometheus-client multiprocess mode each worker has its own guard, so a label
exposes at most ``workers * limit`` values plus ``other``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from costwatch._core.errors import ConfigError
from costwatch._core.failopen import errors
from costwatch._core.forks import new_lock

OTHER = "other"
"""The value a guarded label takes once its distinct-value limit is reached."""

MAX_VALUE_LENGTH = 256
"""Characters kept of a label value (longer ones are cut, and the cut counted)."""

COMPONENT = "labels"
"""The ``costwatch_internal_errors_total`` component of a repaired label value."""

DEFAULT_LABEL_LIMITS: Mapping[str, int] = {
    "tenant": 100,
    "feature": 100,
    "team": 100,
    "strategy": 100,
    "pipeline": 100,
    "source": 100,
    "cache": 100,
    "stage": 100,
    "provider": 100,
    "model": 200,
    "budget": 200,
}
"""Applied to every label the caller does not set a limit for.  ``model`` and ``provider`` are
generous (a deployment has a few of each) but finite: a model name made up per request would
otherwise grow the totals with every call."""


class LabelValueError(ValueError):
    """A label value that could not be exported as it came (counted, then repaired)."""


def clean_value(label: str, value: str) -> str:
    """``value`` itself when it can be exported, else its repair (reported as an error).

    A repair replaces each surrogate with U+FFFD and keeps the first ``MAX_VALUE_LENGTH``
    characters.  In strict mode the report raises instead.
    """
    if is_clean(value):
        return value
    reasons = []
    if not _encodes(value):
        reasons.append("is not valid UTF-8 (a lone surrogate): replaced with U+FFFD")
        value = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in value)
    if len(value) > MAX_VALUE_LENGTH:
        reasons.append(f"has {len(value)} characters: cut to {MAX_VALUE_LENGTH}")
        value = value[:MAX_VALUE_LENGTH]
    errors.report(COMPONENT, LabelValueError(f"a value of label {label!r} {'; '.join(reasons)}"))
    return value


def tag_value(label: str, value: object) -> str:
    """A tag's value as costwatch keeps it: ``str(value)``, cleaned (see ``clean_value``)."""
    text = str(value)
    if text.isascii() and len(text) <= MAX_VALUE_LENGTH:
        return text
    return clean_value(label, text)


def is_clean(value: str) -> bool:
    """Whether ``value`` can be exported as it is (``clean_value`` would return it)."""
    return len(value) <= MAX_VALUE_LENGTH and (value.isascii() or _encodes(value))


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def merged_limits(label_limits: Mapping[str, int] | None) -> dict[str, int]:
    """``label_limits`` over the defaults; raises ConfigError for a limit below 1."""
    limits = dict(DEFAULT_LABEL_LIMITS)
    for label, limit in (label_limits or {}).items():
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError("label_limits", {label: limit}, "each limit must be an integer >= 1")
        limits[label] = limit
    return limits


class LabelGuard:
    """Admits the first ``limit`` distinct values of each limited label; later ones are ``other``.

    Every value is cleaned (``clean_value``) before it is admitted.  ``admit`` is lock-free for
    a value already admitted; the lock is taken only to admit a new value or to count an
    overflow.  The empty value (label not set) and ``other`` itself never use up a slot.
    """

    def __init__(
        self,
        label_limits: Mapping[str, int] | None = None,
        on_overflow: Callable[[str], None] | None = None,
    ) -> None:
        self._lock = new_lock()
        self._limits: dict[str, int] = merged_limits(label_limits)
        self._seen: dict[str, set[str]] = {label: set() for label in self._limits}
        self._overflow: dict[str, int] = {}
        self.on_overflow = on_overflow
        """Called with the label name after each replacement (the multiprocess path counts it)."""

    @property
    def limits(self) -> Mapping[str, int]:
        return self._limits

    def set_limits(self, label_limits: Mapping[str, int] | None) -> None:
        """New limits; values already admitted stay admitted."""
        limits = merged_limits(label_limits)
        with self._lock:
            self._limits = limits
            for label in limits:
                self._seen.setdefault(label, set())

    def admit(self, label: str, value: str, weight: int = 1) -> str:
        """``value`` if the label may take it (cleaned, see ``clean_value``), else ``other``,
        and the replacement counted ``weight`` times (once per call it stands for).

        The same object comes back when ``value`` is admitted as it is, so ``is`` tells a
        caller whether anything changed.
        """
        seen = self._seen.get(label)
        if seen is not None and value in seen:
            return value
        if value == "" or value == OTHER:
            return value
        value = clean_value(label, value)
        if seen is None or value in seen:
            return value
        with self._lock:
            if value in seen:
                return value
            limit = self._limits.get(label)
            if limit is None or len(seen) < limit:
                seen.add(value)
                return value
            self._overflow[label] = self._overflow.get(label, 0) + weight
        callback = self.on_overflow
        if callback is not None:
            callback(label)
        return OTHER

    def guard(
        self, names: tuple[str, ...], values: tuple[str, ...], weight: int = 1
    ) -> tuple[str, ...]:
        """``values`` (labelled by ``names``) with every one passed through ``admit``: the same
        tuple when none changed."""
        out = list(values)
        changed = False
        for i, name in enumerate(names):
            admitted = self.admit(name, out[i], weight)
            if admitted is not out[i]:
                out[i] = admitted
                changed = True
        return tuple(out) if changed else values

    def overflow_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._overflow)

    def distinct(self, label: str) -> int:
        """How many values of ``label`` have been admitted."""
        return len(self._seen.get(label, ()))
