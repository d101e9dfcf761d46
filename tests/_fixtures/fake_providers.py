"""A real HTTP server on loopback that answers like the OpenAI and Anthropic APIs.

The tests drive the REAL ``openai`` and ``anthropic`` SDK clients at it (``base_url``), so the
SDKs parse, stream and raise exactly as they do against the providers.  Bodies, SSE event
sequences, ids and usage objects follow the published API shapes; the usage numbers, the reply
text and failures are knobs a test sets on the ``FakeProvider`` before calling.

Responses are deterministic (fixed ids and timestamps), so two identical requests receive
byte-identical answers: the stream-identity tests compare a call made with costwatch against
one made without it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import struct
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

CREATED = 1_700_000_000
CHAT_ID = "chatcmpl-CwFake7bW1x9Yq2ZkP3a"
COMPLETION_ID = "cmpl-CwFake9dX2y0Zr3AlQ4b"
GEMINI_ID = "gemFakeResp01"
RESPONSE_ID = "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b"
MESSAGE_ID = "msg_01XFDUDYJgAACzvnptvVoYEL"
FINGERPRINT = "fp_06737a9306"

RESPONSE_MODELS = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    "o4-mini": "o4-mini-2025-04-16",
    "o3-mini": "o3-mini-2025-01-31",
    "claude-sonnet-4-0": "claude-sonnet-4-20250514",
    "claude-3-5-haiku-latest": "claude-3-5-haiku-20241022",
}
"""Aliases the real APIs answer with a dated snapshot name."""


@dataclass
class OpenAIUsage:
    """As OpenAI reports usage: prompt includes cached tokens, completion includes reasoning."""

    prompt_tokens: int = 120
    completion_tokens: int = 30
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    audio_prompt_tokens: int = 0
    """The audio part of the prompt (gpt-audio, gpt-4o-audio-preview)."""
    audio_completion_tokens: int = 0


@dataclass
class AnthropicUsage:
    """Usage as Anthropic reports it: ``input_tokens`` excludes cache reads and writes."""

    input_tokens: int = 120
    output_tokens: int = 30
    cache_read_input_tokens: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    web_search_requests: int = 0
    """Server-side web searches the call ran (``usage.server_tool_use``), billed per search."""


@dataclass
class GeminiUsage:
    """As the Gemini API reports usage: the prompt count includes the cached tokens, and
    thinking tokens come beside the candidates' (visible output) tokens."""

    prompt_token_count: int = 120
    candidates_token_count: int = 30
    cached_content_token_count: int = 0
    thoughts_token_count: int = 0
    audio_prompt_token_count: int = 0
    """The audio part of the prompt, reported in the per-modality details."""

    def metadata(self) -> dict[str, Any]:
        body = {
            "promptTokenCount": self.prompt_token_count,
            "candidatesTokenCount": self.candidates_token_count,
            "totalTokenCount": _total(
                self.prompt_token_count, self.candidates_token_count, self.thoughts_token_count
            ),
        }
        if self.cached_content_token_count:
            body["cachedContentTokenCount"] = self.cached_content_token_count
        if self.thoughts_token_count:
            body["thoughtsTokenCount"] = self.thoughts_token_count
        if self.audio_prompt_token_count:
            body["promptTokensDetails"] = [
                {
                    "modality": "TEXT",
                    "tokenCount": self.prompt_token_count - self.audio_prompt_token_count,
                },
                {"modality": "AUDIO", "tokenCount": self.audio_prompt_token_count},
            ]
        return body


@dataclass
class ReceivedRequest:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]


@dataclass
class Failure:
    status: int
    message: str
    mid_stream_after: int | None = None
    """For streams: send this many content deltas, then an error event."""


@dataclass
class FakeProvider:
    """Knobs of the running fake and what it received."""

    base_url: str
    openai_usage: OpenAIUsage = field(default_factory=OpenAIUsage)
    anthropic_usage: AnthropicUsage = field(default_factory=AnthropicUsage)
    embedding_tokens: int = 8
    gemini_usage: GeminiUsage = field(default_factory=GeminiUsage)
    service_tier: str = "default"
    """The processing tier OpenAI responses say served them (``flex``, ``priority``...)."""
    openai_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Hosted tool calls (``web_search_call``, ``file_search_call`` items) a response lists
    before its message."""
    chat_tool_calls: list[dict[str, Any]] = field(default_factory=list)
    """Function calls (``{"name", "arguments"}``) a chat completion answers with instead of
    text (``finish_reason="tool_calls"``)."""
    gemini_function_call: dict[str, Any] | None = None
    """When set, Gemini answers a request with no function response yet with this call."""
    reply: list[str] = field(
        default_factory=lambda: ["Hello", " from", " the", " fake", " provider", "."]
    )
    always_send_usage: bool = False
    """Chat and legacy completion streams end with a usage chunk even when the request did not
    ask for one (``stream_options.include_usage``), as many OpenAI-compatible servers do."""
    azure_deployments: dict[str, str] = field(default_factory=dict)
    """Azure OpenAI deployment name -> the model it serves (what the response names)."""
    requests: list[ReceivedRequest] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url

    def fail_next(self, status: int, message: str = "fake failure") -> None:
        """The next request is answered with an HTTP error in the API's error shape."""
        with self.lock:
            self.failures.append(Failure(status, message))

    def fail_mid_stream(self, after: int, message: str = "Overloaded") -> None:
        """The next streaming request sends ``after`` text deltas and then an error event."""
        with self.lock:
            self.failures.append(Failure(200, message, mid_stream_after=after))

    def take_failure(self) -> Failure | None:
        with self.lock:
            return self.failures.pop(0) if self.failures else None

    @property
    def reply_text(self) -> str:
        return "".join(self.reply)


# --- OpenAI bodies -----------------------------------------------------------------------------


def _total(*counts: Any) -> Any:
    """The sum a body reports beside its counts; null when a test set a count that is none."""
    try:
        return sum(counts)
    except TypeError:
        return None


def _chat_usage(u: OpenAIUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": _total(u.prompt_tokens, u.completion_tokens),
        "prompt_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "audio_tokens": u.audio_prompt_tokens,
        },
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": u.audio_completion_tokens,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _chat_message(fake: FakeProvider) -> dict[str, Any]:
    if not fake.chat_tool_calls:
        return {
            "role": "assistant",
            "content": fake.reply_text,
            "refusal": None,
            "annotations": [],
        }
    calls = [
        {"id": f"call_fake{i}", "type": "function", "function": dict(call)}
        for i, call in enumerate(fake.chat_tool_calls)
    ]
    return {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls}


def chat_completion(fake: FakeProvider, model: str) -> dict[str, Any]:
    return {
        "id": CHAT_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": RESPONSE_MODELS.get(model, model),
        "choices": [
            {
                "index": 0,
                "message": _chat_message(fake),
                "logprobs": None,
                "finish_reason": "tool_calls" if fake.chat_tool_calls else "stop",
            }
        ],
        "usage": _chat_usage(fake.openai_usage),
        "service_tier": fake.service_tier,
        "system_fingerprint": FINGERPRINT,
    }


def chat_chunks(fake: FakeProvider, model: str, include_usage: bool) -> Iterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": CHAT_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": RESPONSE_MODELS.get(model, model),
            "service_tier": fake.service_tier,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = None
        return body

    def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    yield chunk([choice({"role": "assistant", "content": "", "refusal": None})])
    for piece in fake.reply:
        yield chunk([choice({"content": piece})])
    yield chunk([choice({}, "stop")])
    if include_usage:
        final = chunk([])
        final["usage"] = _chat_usage(fake.openai_usage)
        yield final


def _completion_usage(u: OpenAIUsage) -> dict[str, Any]:
    """The legacy completions endpoint reports no token details."""
    return {
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def text_completion(fake: FakeProvider, model: str) -> dict[str, Any]:
    return {
        "id": COMPLETION_ID,
        "object": "text_completion",
        "created": CREATED,
        "model": model,
        "choices": [
            {"text": fake.reply_text, "index": 0, "logprobs": None, "finish_reason": "stop"}
        ],
        "usage": _completion_usage(fake.openai_usage),
        "system_fingerprint": None,
    }


def text_completion_chunks(
    fake: FakeProvider, model: str, include_usage: bool
) -> Iterator[dict[str, Any]]:
    def chunk(choices: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": COMPLETION_ID,
            "object": "text_completion",
            "created": CREATED,
            "model": model,
            "choices": choices,
            "system_fingerprint": None,
        }
        if include_usage:
            body["usage"] = None
        return body

    for i, piece in enumerate(fake.reply):
        finish = "stop" if i == len(fake.reply) - 1 else None
        yield chunk([{"text": piece, "index": 0, "logprobs": None, "finish_reason": finish}])
    if include_usage:
        final = chunk([])
        final["usage"] = _completion_usage(fake.openai_usage)
        yield final


def _responses_usage(u: OpenAIUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def _message_item(text: str, status: str) -> dict[str, Any]:
    content = [{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]
    return {
        "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
        "type": "message",
        "status": status,
        "content": content if status == "completed" else [],
        "role": "assistant",
    }


_REASONING_ITEM = {
    "id": "rs_6820f383d7c08191846711c5df8233bc0ac5ba57aafcbac7",
    "type": "reasoning",
    "summary": [],
}


def response_object(
    fake: FakeProvider, body: dict[str, Any], *, status: str, output: list[dict[str, Any]]
) -> dict[str, Any]:
    model = str(body.get("model", ""))
    return {
        "id": RESPONSE_ID,
        "object": "response",
        "created_at": CREATED,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": RESPONSE_MODELS.get(model, model),
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "prompt_cache_key": None,
        "reasoning": {"effort": "medium", "summary": None},
        "safety_identifier": None,
        "service_tier": fake.service_tier,
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto",
        "tools": body.get("tools") or [],  # the API echoes the tools the request gave
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": _responses_usage(fake.openai_usage) if status == "completed" else None,
        "user": None,
        "metadata": {},
    }


def _response_output(fake: FakeProvider) -> list[dict[str, Any]]:
    output = [dict(_REASONING_ITEM)] if fake.openai_usage.reasoning_tokens else []
    output += [dict(item) for item in fake.openai_tool_calls]
    output.append(_message_item(fake.reply_text, "completed"))
    return output


def response_events(fake: FakeProvider, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    seq = 0

    def event(kind: str, **fields: Any) -> dict[str, Any]:
        nonlocal seq
        out = {"type": kind, "sequence_number": seq, **fields}
        seq += 1
        return out

    in_progress = response_object(fake, body, status="in_progress", output=[])
    yield event("response.created", response=in_progress)
    yield event("response.in_progress", response=in_progress)
    index = 0
    if fake.openai_usage.reasoning_tokens:
        yield event("response.output_item.added", output_index=0, item=dict(_REASONING_ITEM))
        yield event("response.output_item.done", output_index=0, item=dict(_REASONING_ITEM))
        index = 1
    item = _message_item("", "in_progress")
    item_id = item["id"]
    yield event("response.output_item.added", output_index=index, item=item)
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
    yield event(
        "response.content_part.added",
        item_id=item_id,
        output_index=index,
        content_index=0,
        part=part,
    )
    for piece in fake.reply:
        yield event(
            "response.output_text.delta",
            item_id=item_id,
            output_index=index,
            content_index=0,
            delta=piece,
            logprobs=[],
        )
    text = fake.reply_text
    yield event(
        "response.output_text.done",
        item_id=item_id,
        output_index=index,
        content_index=0,
        text=text,
        logprobs=[],
    )
    yield event(
        "response.content_part.done",
        item_id=item_id,
        output_index=index,
        content_index=0,
        part={**part, "text": text},
    )
    yield event(
        "response.output_item.done", output_index=index, item=_message_item(text, "completed")
    )
    yield event(
        "response.completed",
        response=response_object(fake, body, status="completed", output=_response_output(fake)),
    )


def embeddings(fake: FakeProvider, body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input")
    batch = isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
    count = len(inputs) if batch and isinstance(inputs, list) else 1
    vector = [0.0125, -0.5, 0.25, 0.75]
    encoded: Any = vector
    if body.get("encoding_format") == "base64":
        encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encoded} for i in range(count)],
        "model": body.get("model"),
        "usage": {"prompt_tokens": fake.embedding_tokens, "total_tokens": fake.embedding_tokens},
    }


# --- Gemini bodies -----------------------------------------------------------------------------


def gemini_response(
    model: str, text: str, usage: dict[str, Any], finish: str | None = "STOP"
) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": GEMINI_ID,
    }


def gemini_chunks(fake: FakeProvider, model: str) -> Iterator[dict[str, Any]]:
    """Like the API: every chunk carries the prompt count, the last one the full usage."""
    usage = fake.gemini_usage
    for i, piece in enumerate(fake.reply):
        last = i == len(fake.reply) - 1
        metadata = (
            usage.metadata()
            if last
            else {
                "promptTokenCount": usage.prompt_token_count,
                "totalTokenCount": usage.prompt_token_count,
            }
        )
        yield gemini_response(model, piece, metadata, "STOP" if last else None)


def gemini_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """``batchEmbedContents``: the Gemini API reports no token counts for embeddings."""
    return {"embeddings": [{"values": [0.0125, -0.5, 0.25]} for _ in body.get("requests", [])]}


def openai_error(status: int, message: str) -> dict[str, Any]:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# --- Anthropic bodies ----------------------------------------------------------------------------


def _anthropic_usage(u: AnthropicUsage, output_tokens: int, searches: int) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_write_5m + u.cache_write_1h,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": u.cache_write_5m,
            "ephemeral_1h_input_tokens": u.cache_write_1h,
        },
        "output_tokens": output_tokens,
        "service_tier": "standard",
        "server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0}
        if searches
        else None,
    }


def anthropic_message(fake: FakeProvider, model: str) -> dict[str, Any]:
    return {
        "id": MESSAGE_ID,
        "type": "message",
        "role": "assistant",
        "model": RESPONSE_MODELS.get(model, model),
        "content": [{"type": "text", "text": fake.reply_text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": _anthropic_usage(
            fake.anthropic_usage,
            fake.anthropic_usage.output_tokens,
            fake.anthropic_usage.web_search_requests,
        ),
    }


def anthropic_events(
    fake: FakeProvider, model: str, fail_after: int | None
) -> Iterator[dict[str, Any]]:
    start = anthropic_message(fake, model)
    start.update(content=[], stop_reason=None)
    start["usage"] = _anthropic_usage(fake.anthropic_usage, 1, 0)
    yield {"type": "message_start", "message": start}
    yield {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    yield {"type": "ping"}
    for n, piece in enumerate(fake.reply):
        if fail_after is not None and n == fail_after:
            return
        yield {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "text_delta", "text": piece},
        }
    yield {"type": "content_block_stop", "index": 0}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "output_tokens": fake.anthropic_usage.output_tokens,
            **(
                {"server_tool_use": {"web_search_requests": searches, "web_fetch_requests": 0}}
                if (searches := fake.anthropic_usage.web_search_requests)
                else {}
            ),
        },
    }
    yield {"type": "message_stop"}


def anthropic_error(status: int, message: str) -> dict[str, Any]:
    kinds = {
        400: "invalid_request_error",
        401: "authentication_error",
        429: "rate_limit_error",
        529: "overloaded_error",
    }
    kind = kinds.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy",
    }


# --- the HTTP server ---------------------------------------------------------------------------


_CHUNKED_OPENAI_ENDPOINTS: dict[
    str,
    tuple[
        Callable[[FakeProvider, str, bool], Iterator[dict[str, Any]]],
        Callable[[FakeProvider, str], dict[str, Any]],
    ],
] = {
    "/v1/chat/completions": (chat_chunks, chat_completion),
    "/v1/completions": (text_completion_chunks, text_completion),
}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        body = json.loads(raw or b"{}")
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(
                ReceivedRequest(self.path, body, {k.lower(): v for k, v in self.headers.items()})
            )
        path = self.path.split("?", 1)[0]
        if path.startswith("/openai/deployments/"):  # Azure OpenAI: the deployment's model
            deployment, _, endpoint = path.removeprefix("/openai/deployments/").partition("/")
            path = "/v1/" + endpoint
            body["model"] = fake.azure_deployments.get(deployment, deployment)
        elif "/publishers/anthropic/models/" in path:  # Vertex AI: the model is in the path
            body["model"], _, method = path.rpartition("/models/")[2].partition(":")
            body["stream"] = method == "streamRawPredict"
            path = "/v1/messages"
        elif path.startswith("/model/"):  # Bedrock: /model/<id>/invoke[-with-response-stream]
            model_id, _, method = unquote(path.removeprefix("/model/")).rpartition("/")
            if method == "invoke-with-response-stream":
                self._bedrock_stream(anthropic_events(fake, model_id, None))
                return
            body["model"] = model_id
            path = "/v1/messages" if method == "invoke" else path
        anthropic = path == "/v1/messages"
        failure = fake.take_failure()
        if failure is not None and failure.mid_stream_after is None:
            error = anthropic_error if anthropic else openai_error
            self._json(failure.status, error(failure.status, failure.message), anthropic)
            return
        fail_after = failure.mid_stream_after if failure is not None else None
        message = failure.message if failure is not None else ""
        stream = bool(body.get("stream"))
        model = str(body.get("model", ""))
        gemini_model, _, gemini_method = path.rpartition("/models/")[2].partition(":")
        chunked = _CHUNKED_OPENAI_ENDPOINTS.get(path)
        if gemini_method == "generateContent":
            usage = fake.gemini_usage.metadata()
            reply = gemini_response(gemini_model, fake.reply_text, usage)
            answered = any(
                "functionResponse" in part
                for content in body.get("contents", [])
                for part in content.get("parts", [])
            )
            if fake.gemini_function_call is not None and not answered:
                reply["candidates"][0]["content"]["parts"] = [
                    {"functionCall": fake.gemini_function_call}
                ]
            self._json(200, reply, anthropic=False)
        elif gemini_method == "streamGenerateContent":
            self._sse(
                ((None, c) for c in gemini_chunks(fake, gemini_model)),
                None,
                anthropic=False,
                done_marker=False,
            )
        elif gemini_method == "batchEmbedContents":
            self._json(200, gemini_embeddings(body), anthropic=False)
        elif chunked is not None:  # chat and legacy completions: data-only SSE chunks
            make_chunks, make_body = chunked
            if stream:
                options = body.get("stream_options") or {}
                asked = bool(options.get("include_usage"))
                chunks = make_chunks(fake, model, asked or fake.always_send_usage)
                self._sse(((None, c) for c in chunks), fail_after, anthropic=False, message=message)
            else:
                self._json(200, make_body(fake, model), anthropic=False)
        elif path == "/v1/responses":
            if stream:
                events = response_events(fake, body)
                self._sse(
                    ((e["type"], e) for e in events), fail_after, anthropic=False, message=message
                )
            else:
                output = _response_output(fake)
                self._json(
                    200,
                    response_object(fake, body, status="completed", output=output),
                    anthropic=False,
                )
        elif path == "/v1/embeddings":
            self._json(200, embeddings(fake, body), anthropic=False)
        elif anthropic:
            if stream:
                events = anthropic_events(fake, model, fail_after)
                self._sse(
                    ((e["type"], e) for e in events), fail_after, anthropic=True, message=message
                )
            else:
                self._json(200, anthropic_message(fake, model), anthropic=True)
        else:
            self._json(404, openai_error(404, f"unknown path {path}"), anthropic=False)

    def _headers(self, anthropic: bool) -> None:
        if anthropic:
            self.send_header("request-id", "req_011CSHoEeqs5C35K2UUqR7Fy")
        else:
            self.send_header("x-request-id", "req_fake_0123456789abcdef")
            self.send_header("openai-processing-ms", "12")

    def _json(self, status: int, payload: dict[str, Any], anthropic: bool) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self._headers(anthropic)
        self.end_headers()
        self.wfile.write(data)

    def _sse(
        self,
        events: Iterator[tuple[str | None, dict[str, Any]]],
        fail_after: int | None,
        *,
        anthropic: bool,
        message: str = "",
        done_marker: bool = True,
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache")
        self._headers(anthropic)
        self.end_headers()
        deltas = 0
        try:
            for name, payload in events:
                is_delta = payload.get("type") in ("response.output_text.delta",) or (
                    name is None
                    and any(
                        c.get("text") or c.get("delta", {}).get("content")
                        for c in payload.get("choices", ())
                    )
                )
                if not anthropic and fail_after is not None and is_delta and deltas == fail_after:
                    self._error_event(anthropic, message or "stream failed")
                    break
                deltas += is_delta
                self._chunk(_sse_frame(name, payload))
            else:
                if anthropic and fail_after is not None:
                    self._error_event(anthropic, message or "Overloaded")
                elif done_marker:  # OpenAI's end of stream (Gemini sends none)
                    self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _error_event(self, anthropic: bool, message: str) -> None:
        if anthropic:
            payload = {"type": "error", "error": {"type": "overloaded_error", "message": message}}
            self._chunk(_sse_frame("error", payload))
        else:
            self._chunk(_sse_frame(None, openai_error(500, message)))

    def _bedrock_stream(self, events: Iterator[dict[str, Any]]) -> None:
        """Bedrock's streaming answer: each Anthropic event, base64 in a ``chunk`` message of
        the AWS event-stream binary framing."""
        self.send_response(200)
        self.send_header("Content-Type", "application/vnd.amazon.eventstream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for event in events:
            payload = json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()})
            self._chunk(
                _event_stream_message(
                    {
                        ":event-type": "chunk",
                        ":content-type": "application/json",
                        ":message-type": "event",
                    },
                    payload.encode(),
                )
            )
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


def _event_stream_message(headers: dict[str, str], payload: bytes) -> bytes:
    """One AWS event-stream message: prelude (total and headers length, CRC), string headers,
    payload, CRC of all that."""
    encoded = b"".join(
        struct.pack("B", len(name))
        + name.encode()
        + struct.pack(">BH", 7, len(value))
        + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 16 + len(encoded) + len(payload), len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def _sse_frame(name: str | None, payload: dict[str, Any]) -> bytes:
    head = f"event: {name}\n" if name else ""
    return f"{head}data: {json.dumps(payload)}\n\n".encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    """The listen backlog: tests open tens of connections at once (the default 5 makes the
    rest wait for a SYN retransmit, a second)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        port = self.server_address[1]
        self.fake = FakeProvider(base_url=f"http://127.0.0.1:{port}")

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that drops its connection (an abandoned stream) is not a server error."""
        import sys

        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def running_fake_provider() -> Iterator[FakeProvider]:
    """A running fake OpenAI + Anthropic endpoint on 127.0.0.1:<free port>."""
    server = _Server()
    thread = threading.Thread(
        target=server.serve_forever, args=(0.02,), name="fake-provider", daemon=True
    )
    thread.start()
    try:
        yield server.fake
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        # What costwatch learned about this server must not pass to a later one on its port.
        from costwatch.capture.providers.openai import _usage_unasked

        for url in [url for url in _usage_unasked if url.startswith(server.fake.base_url)]:
            _usage_unasked.pop(url, None)


@pytest.fixture(name="fake_provider")
def fake_provider_fixture() -> Iterator[FakeProvider]:
    """Fixture ``fake_provider``: import ``fake_provider_fixture`` (or list this module in
    ``pytest_plugins``) to use it."""
    with running_fake_provider() as fake:
        yield fake


def http_client_to_the_fake(fake: FakeProvider, http: Any = httpx) -> Any:
    """An ``http.Client`` (``httpx``, or the ``httpx2`` newer Anthropic SDKs use) that sends
    what an SDK addresses to a provider's public host (its ``.../v1/<endpoint>``) to the local
    fake instead: the SDK client keeps its real base URL."""
    target = http.URL(fake.base_url)

    class ToTheFake(http.HTTPTransport):  # type: ignore[misc, name-defined]
        def handle_request(self, request: Any) -> Any:
            endpoint = request.url.path.split("/v1/", 1)[1]
            request.url = request.url.copy_with(
                scheme="http", host=target.host, port=target.port, path="/v1/" + endpoint
            )
            return super().handle_request(request)

    return http.Client(transport=ToTheFake())
