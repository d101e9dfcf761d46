"""Anthropic messages (direct, Bedrock, Vertex AI): usage, partition and stream state.

``input_tokens`` *excludes* cache reads and writes, which are reported beside it;
``cache_creation`` splits writes into 5-minute and 1-hour entries (``cache_write_1h`` is the
1-hour subset).  ``output_tokens_details.thinking_tokens``, when reported, is the reasoning part
of ``output_tokens``.  Streams report input and cache counts on ``message_start`` and the
cumulative output on ``message_delta`` (newer API versions repeat the input side there too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from costwatch._core.record import MAX_COUNT, Extras, Tokens, count, counts
from costwatch.capture._observed import Observed

_EMPTY: Mapping[str, Any] = {}

ONLY_FIELDS = frozenset(
    {"cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"}
)
"""Usage fields only Anthropic's shape has: they tell it from the OpenAI Responses shape."""


COUNTS = (
    "input_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation.ephemeral_5m_input_tokens",
    "cache_creation.ephemeral_1h_input_tokens",
    "output_tokens",
    "output_tokens_details.thinking_tokens",
    "server_tool_use.web_search_requests",
)
"""The names of ``partition``'s counts (for errors)."""


def partition(
    fresh: Any,
    read: Any,
    write: Any,
    write_5m: Any,
    write_1h: Any,
    output: Any,
    thinking: Any,
    web_searches: Any,
) -> Tokens:
    """Anthropic's counts as the partition; ``write`` None: the sum of its 5m and 1h parts.
    A count that is not one raises ``InvalidUsage`` (one combined check for plain ints)."""
    written = 0 if write is None else write
    if not (
        int
        is type(fresh)
        is type(read)
        is type(written)
        is type(write_5m)
        is type(write_1h)
        is type(output)
        is type(thinking)
        is type(web_searches)
        and 0
        <= fresh | read | written | write_5m | write_1h | output | thinking | web_searches
        <= MAX_COUNT
    ):
        fresh, read, written, write_5m, write_1h, output, thinking, web_searches = counts(
            COUNTS, (fresh, read, written, write_5m, write_1h, output, thinking, web_searches)
        )
    if write is None:
        written = write_5m + write_1h
    thinking = min(thinking, output)
    return (
        fresh,
        read,
        max(written, write_1h),
        output - thinking,
        thinking,
        write_1h,
        Extras(web_searches) if web_searches else None,
    )


def usage(u: Any) -> Tokens:
    """The partition of an SDK ``Usage`` object."""
    creation = getattr(u, "cache_creation", None)
    details = getattr(u, "output_tokens_details", None)
    tools = getattr(u, "server_tool_use", None)
    return partition(
        getattr(u, "input_tokens", 0),  # absent: 0; present but None: invalid
        getattr(u, "cache_read_input_tokens", None) or 0,
        getattr(u, "cache_creation_input_tokens", None),
        getattr(creation, "ephemeral_5m_input_tokens", None) or 0,
        getattr(creation, "ephemeral_1h_input_tokens", None) or 0,
        getattr(u, "output_tokens", 0),
        getattr(details, "thinking_tokens", None) or 0,
        getattr(tools, "web_search_requests", None) or 0,
    )


def dict_usage(u: Mapping[str, Any]) -> Tokens:
    """The partition of a JSON usage body."""
    creation = u.get("cache_creation") or _EMPTY
    details = u.get("output_tokens_details") or _EMPTY
    return partition(
        u.get("input_tokens", 0),
        u.get("cache_read_input_tokens") or 0,
        u.get("cache_creation_input_tokens"),
        creation.get("ephemeral_5m_input_tokens") or 0,
        creation.get("ephemeral_1h_input_tokens") or 0,
        u.get("output_tokens", 0),
        details.get("thinking_tokens") or details.get("reasoning_tokens") or 0,
        (u.get("server_tool_use") or _EMPTY).get("web_search_requests") or 0,
    )


# --- streams ---------------------------------------------------------------------------------


class StreamState:
    """The counts an Anthropic stream has reported so far (running totals, not deltas)."""

    __slots__ = ("fresh", "read", "write", "write_1h", "output", "thinking", "searches", "final")

    def __init__(self) -> None:
        self.fresh = self.read = self.write = self.write_1h = 0
        self.output = self.thinking = self.searches = 0
        self.final = False
        """A ``message_delta`` with usage arrived: the output count is the final one."""

    def start(self, u: Any) -> None:
        """``message_start``'s usage: the input side, and the output so far."""
        fresh, read, write, output, reasoning, write_1h, extras = usage(u)
        self.fresh, self.read, self.write, self.write_1h = fresh, read, write, write_1h
        self.output, self.thinking = output + reasoning, reasoning
        self.searches = extras.web_searches if extras is not None else 0

    def delta(self, u: Any) -> None:
        """``message_delta``'s usage: the cumulative output, and input counts when repeated."""
        self.final = True
        self.output = count("output_tokens", u.output_tokens)
        value = getattr(u, "input_tokens", None)
        if value is not None:
            self.fresh = count("input_tokens", value)
        value = getattr(u, "cache_read_input_tokens", None)
        if value is not None:
            self.read = count("cache_read_input_tokens", value)
        value = getattr(u, "cache_creation_input_tokens", None)
        if value is not None:
            self.write = count("cache_creation_input_tokens", value)
            self.write_1h = min(self.write_1h, self.write)
        details = getattr(u, "output_tokens_details", None)
        if details is not None:
            self.thinking = getattr(details, "thinking_tokens", None) or 0
        tools = getattr(u, "server_tool_use", None)
        if tools is not None:
            self.searches = getattr(tools, "web_search_requests", None) or 0

    def tokens(self, output: int | None = None) -> Tokens:
        """The partition so far; ``output``: an estimate replacing the reported output (a
        stream cut short before its final count), with no thinking part."""
        if output is None:
            output, thinking = self.output, self.thinking
        else:
            thinking = 0
        return partition(
            self.fresh, self.read, self.write, 0, self.write_1h, output, thinking, self.searches
        )


def _state(obs: Observed) -> StreamState:
    state = obs.provider_state
    if not isinstance(state, StreamState):
        state = StreamState()
        obs.provider_state = state
    return state


def _on_message_start(obs: Observed, event: Any) -> None:
    message = event.message
    state = _state(obs)
    obs.response_model = message.model or obs.response_model
    if message.usage is not None:
        state.start(message.usage)


def _on_message_delta(obs: Observed, event: Any) -> None:
    state = _state(obs)
    if event.usage is not None:
        state.delta(event.usage)


def _on_content_block_delta(obs: Observed, event: Any) -> None:
    delta = event.delta
    kind = delta.type
    if kind == "text_delta":
        obs.texts.append(delta.text)
    elif kind == "thinking_delta":
        obs.texts.append(delta.thinking)
    elif kind == "input_json_delta":
        obs.texts.append(delta.partial_json)


EVENT_HANDLERS: dict[str, Callable[[Observed, Any], None]] = {
    "message_start": _on_message_start,
    "message_delta": _on_message_delta,
    "content_block_delta": _on_content_block_delta,
}
"""The messages API's stream events, by ``type``."""
