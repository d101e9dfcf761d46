"""What a streamed call has shown so far: the state the providers' stream handlers fill in."""

from __future__ import annotations

from typing import Protocol

from costwatch._core.record import InvalidUsage, Tokens


class Observed:
    """Reported usage, the response model, text for estimation, and per-provider stream state.

    The providers' handlers (``capture.providers``) fill it in item by item; the stream
    watcher turns it into the call's usage when the stream ends.
    """

    __slots__ = (
        "hide_usage_chunk",
        "tokens",
        "response_model",
        "texts",
        "error_type",
        "service_tier",
        "provider_state",
        "invalid",
        "probe",
    )

    def __init__(self, hide_usage_chunk: bool = False, probe: str = "") -> None:
        self.hide_usage_chunk = hide_usage_chunk
        """costwatch asked for OpenAI's usage-only chunk on the caller's behalf: hide it."""
        self.tokens: Tokens | None = None
        """The complete usage a provider reported (the last report wins: running totals)."""
        self.response_model = ""
        self.texts: list[str] = []
        self.error_type = ""
        self.service_tier = ""
        """The processing tier the stream said served it (OpenAI), if it said."""
        self.provider_state: ProviderStreamState | None = None
        """A provider's own running counts (Anthropic reports usage in parts)."""
        self.invalid: InvalidUsage | None = None
        """A usage report the stream carried that was not a valid count: recorded as invalid."""
        self.probe = probe
        """The server (OpenAI-compatible base URL) this stream was sent to without asking for
        usage, to learn whether it sends its usage chunk unasked; "" when not a probe."""

    @property
    def text(self) -> str:
        return "".join(self.texts)


class ProviderStreamState(Protocol):
    """A provider's running counts for a stream that reports its usage in parts."""

    final: bool
    """The provider sent its final count."""

    def tokens(self, output: int | None = None) -> Tokens:
        """The partition so far; ``output`` replaces the reported output (an estimate)."""
