"""Known gaps in a call's price, counted and logged once per model: never silent.

A gap is a call priced with something missing from the price data: today, audio tokens of a
model whose audio rate is unknown (billed at the text rate and marked in ``price_source``).
"""

from __future__ import annotations

import logging

from costwatch._core.forks import new_lock

logger = logging.getLogger("costwatch")

AUDIO_AT_TEXT_RATE = "audio-at-text-rate"
"""Audio tokens billed at the text rate: no audio rate is known for the model."""

_MAX_KEYS = 10_000


class PriceGaps:
    """Counts of calls priced with a known gap, per ``(kind, price matched)``."""

    def __init__(self) -> None:
        self._lock = new_lock()
        self._counts: dict[tuple[str, str], int] = {}

    def note(self, kind: str, matched: str, calls: int = 1) -> None:
        """Count ``calls`` priced with gap ``kind``; the first one of a model logs a warning."""
        key = (kind, matched)
        with self._lock:
            seen = self._counts.get(key)
            if seen is None and len(self._counts) >= _MAX_KEYS:
                return
            self._counts[key] = (seen or 0) + calls
        if seen is None:
            logger.warning(
                "costwatch: %s has no published audio rate in the price data; its audio tokens "
                "are billed at the text rate and marked price_source=...:%s. Add "
                "input_audio_per_mtok/output_audio_per_mtok to a price file.",
                matched,
                kind,
            )

    def counts(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


gaps = PriceGaps()
"""The process-wide gap counter (``costwatch.pricing.gaps.counts()``)."""
