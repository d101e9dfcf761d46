"""LlamaIndex: an event handler on LlamaIndex's instrumentation dispatcher.

    import costwatch
    from costwatch.integrations.llamaindex import instrument_llamaindex

    costwatch.instrument()      # the OpenAI/Anthropic clients LlamaIndex makes: exact usage
    instrument_llamaindex()     # retrievals as context; LLM and embedding calls of any SDK

Records, under the costwatch tags and request in force: every retrieval (its nodes become,
inside a ``costwatch.request``, the retrieved context of the next generation), every LLM chat
or completion (usage read from the provider response LlamaIndex keeps in ``response.raw``;
estimated and marked so when it has none, as a stream without usage), and every embedding
(LlamaIndex's embedding events carry no usage: estimated from the embedded text).

With ``costwatch.instrument()`` on as well, an LLM or embedding call made through an
instrumented SDK client is recorded by the instrumentation, with the provider's reported usage,
and the handler leaves it alone: never both.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

from costwatch._core.failopen import errors
from costwatch._core.record import EMPTY_USAGE, TokenUsage
from costwatch.capture._usage import extract_tokens
from costwatch.integrations._common import ModelRun, Specs, recorded_by_sdk, require

_instrumentation = require("llama_index.core.instrumentation", "llamaindex")
_llm = require("llama_index.core.instrumentation.events.llm", "llamaindex")
_embedding = require("llama_index.core.instrumentation.events.embedding", "llamaindex")
_retrieval = require("llama_index.core.instrumentation.events.retrieval", "llamaindex")
_pydantic = require("pydantic", "llamaindex")
_BaseEventHandler: Any = require(
    "llama_index.core.instrumentation.event_handlers", "llamaindex"
).BaseEventHandler

__all__ = ["CostwatchEventHandler", "instrument_llamaindex", "uninstrument_llamaindex"]

_COMPONENT = "llamaindex"
_MAX_OPEN = 10_000
"""Started calls the handler keeps until their end event (past this the oldest is dropped)."""


def _provider_of(model_dict: dict[str, Any], default: str | None) -> str:
    if default:
        return default
    name = str(model_dict.get("class_name") or "").lower()
    for provider in ("azure", "anthropic", "openai", "gemini", "bedrock", "mistral"):
        if provider in name:
            return provider
    return "unknown"


def _model_of(model_dict: dict[str, Any]) -> str:
    for key in ("model", "model_name"):
        value = model_dict.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def _messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    return [
        {"role": str(getattr(m, "role", "user")), "content": str(getattr(m, "content", "") or "")}
        for m in messages
    ]


def _retriever_of(span_id: str) -> str:
    """``VectorIndexRetriever.retrieve-<uuid>`` -> ``VectorIndexRetriever``."""
    return span_id.partition(".")[0] or "retriever"


_IGNORED, _CHAT, _COMPLETION, _EMBED, _MODEL_END, _EMBED_END, _RETRIEVE, _RETRIEVED = range(8)


_EVENT_KINDS: tuple[tuple[Any, int], ...] = (
    (_llm.LLMChatStartEvent, _CHAT),
    (_llm.LLMCompletionStartEvent, _COMPLETION),
    (_embedding.EmbeddingStartEvent, _EMBED),
    (_llm.LLMChatEndEvent | _llm.LLMCompletionEndEvent, _MODEL_END),
    (_embedding.EmbeddingEndEvent, _EMBED_END),
    (_retrieval.RetrievalStartEvent, _RETRIEVE),
    (_retrieval.RetrievalEndEvent, _RETRIEVED),
)
"""The event classes the handler follows, first match wins, and what it does with each."""


def _kind_of(cls: type) -> int:
    """What the handler does with an event of this class (``issubclass`` against pydantic's
    ABC metaclass is slow: asked once per class)."""
    for event_class, kind in _EVENT_KINDS:
        if issubclass(cls, event_class):
            return kind
    return _IGNORED


_kinds: dict[type, int] = {}


class _State:
    """The handler's state, one pydantic private attribute (each read of one goes through
    pydantic's ``__getattr__``)."""

    __slots__ = ("provider", "runs", "retrievals", "specs")

    def __init__(self) -> None:
        self.provider: str | None = None
        self.runs: dict[str, ModelRun] = {}
        self.retrievals: dict[str, float] = {}
        self.specs = Specs()


class CostwatchEventHandler(_BaseEventHandler):  # type: ignore[misc]
    """Records LlamaIndex retrievals, LLM calls and embeddings in costwatch (see the module).

    ``provider`` prices every LLM and embedding call as that provider's (default: from the
    LlamaIndex class, ``OpenAI`` -> ``openai``).
    """

    _state: _State = _pydantic.PrivateAttr(default_factory=_State)

    def __init__(self, *, provider: str | None = None, **data: Any) -> None:
        super().__init__(**data)
        self._state.provider = provider

    @classmethod
    def class_name(cls) -> str:
        return "CostwatchEventHandler"

    def handle(self, event: Any, **kwargs: Any) -> None:
        cls = type(event)
        kind = _kinds.get(cls)
        if kind is None:
            kind = _kinds[cls] = _kind_of(cls)
        if kind == _IGNORED:
            return
        try:
            _handle(self.__pydantic_private__["_state"], kind, event)  # not via __getattr__
        except Exception as exc:
            errors.report(_COMPONENT, exc)


def _handle(state: _State, kind: int, event: Any) -> None:
    span = str(event.span_id or "")
    if kind == _CHAT:
        # the messages are read into the estimator's form only if the call reports no usage
        _start(state, span, event.model_dict, "chat", event.messages)
    elif kind == _COMPLETION:
        _start(state, span, event.model_dict, "text_completion", event.prompt)
    elif kind == _EMBED:
        _start(state, span, event.model_dict, "embeddings", None)
    elif kind == _MODEL_END:
        run = state.runs.pop(span, None)
        if run is not None and not recorded_by_sdk(run.sdk_calls):
            _generation(state, run, event.response)
    elif kind == _EMBED_END:
        run = state.runs.pop(span, None)
        if run is not None and not recorded_by_sdk(run.sdk_calls):
            spec = state.specs.get(run.provider, "embedding", "embeddings")
            spec.emit(run.model, None, perf_counter() - run.t0, prompt="\n".join(event.chunks))
    elif kind == _RETRIEVE:
        state.retrievals[span] = perf_counter()
        if len(state.retrievals) > _MAX_OPEN:
            state.retrievals.pop(next(iter(state.retrievals)))
    else:  # _RETRIEVED
        t0 = state.retrievals.pop(span, None)
        if t0 is not None:
            source = _retriever_of(span)
            spec = state.specs.get("vectorstore", "retrieval", "retrieval", source)
            texts = [n.node.get_content() for n in event.nodes]
            spec.emit(source, EMPTY_USAGE, perf_counter() - t0, context_texts=texts)


def _start(
    state: _State, span: str, model_dict: dict[str, Any], operation: str, prompt: object
) -> None:
    state.runs[span] = ModelRun(
        _provider_of(model_dict, state.provider),
        _model_of(model_dict),
        operation,
        prompt,
    )
    if len(state.runs) > _MAX_OPEN:
        state.runs.pop(next(iter(state.runs)))


def _generation(state: _State, run: ModelRun, response: Any) -> None:
    spec = state.specs.get(run.provider, "generation", run.operation)
    raw = getattr(response, "raw", None)
    extracted = extract_tokens(raw) if raw is not None else None
    usage: TokenUsage | None = None
    response_model = ""
    if extracted is not None:
        usage = TokenUsage.of(extracted[0])
        response_model = extracted[1]
    prompt: object = None
    text: object = None
    if usage is None:  # only an estimate reads the prompt and the answer
        prompt = run.prompt
        if run.operation == "chat":
            prompt = _messages(run.prompt)  # type: ignore[arg-type]
        message = getattr(response, "message", None)
        text = getattr(message, "content", None) if message is not None else None
        if text is None:
            text = getattr(response, "text", None)
    spec.emit(
        run.model or response_model,
        usage,
        perf_counter() - run.t0,
        response_model=response_model,
        prompt=prompt,
        estimate_text=text if isinstance(text, str) else None,
    )


def instrument_llamaindex(*, provider: str | None = None) -> CostwatchEventHandler:
    """Add a ``CostwatchEventHandler`` to LlamaIndex's root dispatcher (every LlamaIndex
    component reports there); returns it.  Idempotent: one costwatch handler at most."""
    dispatcher = _instrumentation.get_dispatcher()
    for handler in dispatcher.event_handlers:
        if isinstance(handler, CostwatchEventHandler):
            return handler
    handler = CostwatchEventHandler(provider=provider)
    dispatcher.add_event_handler(handler)
    return handler


def uninstrument_llamaindex() -> None:
    """Remove the costwatch handler from LlamaIndex's root dispatcher."""
    dispatcher = _instrumentation.get_dispatcher()
    dispatcher.event_handlers = [
        h for h in dispatcher.event_handlers if not isinstance(h, CostwatchEventHandler)
    ]
