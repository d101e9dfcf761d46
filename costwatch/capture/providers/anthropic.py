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

from costwatch._core.record import Extras, Tokens
from costwatch.capture._observed import Observed

_EMPTY: Mapping[str, Any] = {}

ONLY_FIELDS = frozenset(
    {"cache_read_input_tokens", "cache_creation_input_tokens", "cache_creation"}
)
"""Usage fields only Anthropic's shape has: they tell it from the OpenAI Responses shape."""


def partition(
    fresh: int,
    read: int,
    write: int | None,
    write_5m: int,
    write_1h: int,
    output: int,
    thinking: int,
    web_searches: int,
) -> Tokens:
    """Anthropic's counts as the partition; ``write`` None: the sum of its 5m and 1h parts."""
    if write is None:
        write = write_5m + write_1h
    thinking = min(thinking, output)
    return (
        int(fresh),
        int(read),
        int(max(write, write_1h)),
        int(output - thinking),
        int(thinking),
        int(write_1h),
        Extras(int(web_searches)) if web_searches else None,
    )


def usage(u: Any) -> Tokens:
    """The partition of an SDK ``Usage`` object."""
    creation = getattr(u, "cache_creation", None)
    details = getattr(u, "output_tokens_details", None)
    tools = getattr(u, "server_tool_use", None)
    return partition(
        getattr(u, "input_tokens", None) or 0,
        getattr(u, "cache_read_input_tokens", None) or 0,
        getattr(u, "cache_creation_input_tokens", None),
        getattr(creation, "ephemeral_5m_input_tokens", None) or 0,
        getattr(creation, "ephemeral_1h_input_tokens", None) or 0,
        getattr(u, "output_tokens", None) or 0,
        getattr(details, "thinking_tokens", None) or 0,
        getattr(tools, "web_search_requests", None) or 0,
    )


def dict_usage(u: Mapping[str, Any]) -> Tokens:
    """The partition of a JSON usage body."""
    creation = u.get("cache_creation") or _EMPTY
    details = u.get("output_tokens_details") or _EMPTY
    return partition(
        u.get("input_tokens") or 0,
        u.get("cache_read_input_tokens") or 0,
        u.get("cache_creation_input_tokens"),
        creation.get("ephemeral_5m_input_tokens") or 0,
        creation.get("ephemeral_1h_input_tokens") or 0,
        u.get("output_tokens") or 0,
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
        self.output = u.output_tokens or 0
        value = getattr(u, "input_tokens", None)
        if value is not None:
            self.fresh = value
        value = getattr(u, "cache_read_input_tokens", None)
        if value is not None:
            self.read = value
        value = getattr(u, "cache_creation_input_tokens", None)
        if value is not None:
            self.write = value
            self.write_1h = min(self.write_1h, value)
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
