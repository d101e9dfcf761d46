"""Provider responses shaped exactly like the OpenAI and Anthropic HTTP APIs, for the demo.

With the SDKs installed, the demo talks to these through the real ``openai`` / ``anthropic``
clients over an in-process ``httpx.MockTransport``, so costwatch sees real SDK objects.
Token counts come from the request itself (tiktoken, or the marked heuristic) so that prompts
with more retrieved context really do cost more.
"""

from __future__ import annotations

import base64
import json
import random
import struct
import threading
import time
from collections.abc import Mapping
from typing import Any

from costwatch._core.tokens import count_message_tokens, count_tokens

_WORDS = (
    "the refund policy allows returns within thirty days of delivery when the item is unused "
    "our support team can reset your password from the account page or by email verification "
    "invoices are issued monthly and can be downloaded as pdf from the billing settings"
).split()


class FakeProviders:
    """Deterministic (seeded) fake of the two APIs; thread-safe."""

    def __init__(self, seed: int = 7, latency_s: tuple[float, float] = (0.0005, 0.003)) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._latency = latency_s
        self._counter = 0

    def _rand(self, low: int, high: int) -> int:
        with self._lock:
            return self._rng.randint(low, high)

    def _next_id(self) -> int:
        with self._lock:
            self._counter += 1
            return self._counter

    def _sleep(self) -> None:
        with self._lock:
            delay = self._rng.uniform(*self._latency)
        time.sleep(delay)

    def _text(self, tokens: int) -> str:
        start = self._rand(0, len(_WORDS) - 1)
        return " ".join(_WORDS[(start + i) % len(_WORDS)] for i in range(max(tokens, 1)))

    # -- OpenAI ------------------------------------------------------------------------------
    def chat_completion(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = str(body.get("model", "gpt-4o-mini"))
        messages = body.get("messages") or []
        prompt = count_message_tokens(messages, model)[0]
        # Automatic prompt caching: prefixes of 1024+ tokens are cached in 128-token steps.
        cached = 0
        if prompt >= 1024 and self._rand(0, 1):
            cached = 1024 + 128 * ((prompt - 1024) // 256)
        max_tokens = int(body.get("max_tokens") or body.get("max_completion_tokens") or 400)
        completion = min(self._rand(40, 260), max_tokens)
        reasoning = 0
        if model.startswith(("o1", "o3", "o4", "gpt-5")):
            reasoning = min(self._rand(64, 512), max_tokens)
            completion = max(completion, reasoning + 20)
        self._sleep()
        return {
            "id": f"chatcmpl-demo{self._next_id()}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": _dated(model),
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self._text(completion - reasoning),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": reasoning,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
            "service_tier": "default",
            "system_fingerprint": "fp_demo",
        }

    def embeddings(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = str(body.get("model", "text-embedding-3-small"))
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        tokens = sum(count_tokens(str(t), model)[0] for t in texts)
        dims = int(body.get("dimensions") or 16)
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            rng = random.Random(hash(str(text)) & 0xFFFF)
            vector = [rng.uniform(-1, 1) for _ in range(dims)]
            encoded: Any = vector
            if as_base64:
                encoded = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        self._sleep()
        return {
            "object": "list",
            "data": data,
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    # -- Anthropic ---------------------------------------------------------------------------
    def message(self, body: Mapping[str, Any]) -> dict[str, Any]:
        model = str(body.get("model", "claude-sonnet-4-6"))
        system = body.get("system") or ""
        messages = list(body.get("messages") or [])
        system_text = system if isinstance(system, str) else json.dumps(system)
        system_tokens = count_tokens(system_text, model)[0]
        rest = count_message_tokens(messages, model)[0]
        # A cached system prompt: written on first use, read afterwards.
        cache_write = cache_read = 0
        if system_tokens >= 1024:
            if self._rand(0, 4) == 0:
                cache_write = system_tokens
            else:
                cache_read = system_tokens
        else:
            rest += system_tokens
        max_tokens = int(body.get("max_tokens") or 400)
        output = min(self._rand(30, 300), max_tokens)
        self._sleep()
        return {
            "id": f"msg_demo{self._next_id()}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": self._text(output)}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": rest,
                "output_tokens": output,
                "cache_creation_input_tokens": cache_write,
                "cache_read_input_tokens": cache_read,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": cache_write,
                    "ephemeral_1h_input_tokens": 0,
                },
                "service_tier": "standard",
            },
        }

    def route(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        if path.endswith("/chat/completions"):
            return self.chat_completion(body)
        if path.endswith("/embeddings"):
            return self.embeddings(body)
        if path.endswith("/messages"):
            return self.message(body)
        raise LookupError(path)


def _dated(model: str) -> str:
    snapshots = {"gpt-4o-mini": "gpt-4o-mini-2024-07-18", "gpt-4o": "gpt-4o-2024-08-06"}
    return snapshots.get(model, model)


def sdk_httpx() -> Any:
    """The HTTP library the installed SDKs are built on (recent releases moved to ``httpx2``)."""
    try:
        import httpx2

        return httpx2
    except ImportError:
        import httpx

        return httpx


def mock_transport(fake: FakeProviders, httpx: Any) -> Any:
    """An ``httpx.MockTransport`` answering like api.openai.com and api.anthropic.com."""

    def handle(request: Any) -> Any:
        try:
            body = json.loads(request.content or b"{}")
            return httpx.Response(200, json=fake.route(request.url.path, body))
        except LookupError:
            return httpx.Response(
                404, json={"error": {"message": "not found", "type": "invalid_request_error"}}
            )

    return httpx.MockTransport(handle)
