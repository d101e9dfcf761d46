"""LangChain: a callback handler that records chat models, LLMs and retrievers.

    from costwatch.integrations.langchain import CostwatchCallbackHandler

    chain.invoke(question, config={"callbacks": [CostwatchCallbackHandler()]})

Each model run is recorded once, under the costwatch tags and request in force where the run
executes, with LangChain's ``usage_metadata`` mapped to costwatch's token partition (its
``input_tokens`` include ``input_token_details.cache_read`` and ``cache_creation``, its
``output_tokens`` include ``output_token_details.reasoning``).  A retriever's documents are
recorded as a retrieval and, inside a ``costwatch.request``, attributed as retrieved context of
the next generation.

With ``costwatch.instrument()`` on as well, the SDK call underneath a run is recorded by the
instrumentation (it sees the exact response, the provider behind the base URL, runs the budget
preflight) and the handler leaves that run alone: never both.  LangChain embeddings emit no
callbacks: they are recorded by ``costwatch.instrument()``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from time import perf_counter
from typing import Any
from uuid import UUID

from costwatch._core.failopen import errors
from costwatch._core.record import EMPTY_USAGE, TokenUsage
from costwatch.capture._decorators import _document_texts
from costwatch.capture._usage import extract_provider_usage
from costwatch.integrations._common import ModelRun, Specs, recorded_by_sdk, require

_BaseCallbackHandler: Any = require("langchain_core.callbacks", "langchain").BaseCallbackHandler

__all__ = ["CostwatchCallbackHandler", "usage_from_metadata"]

_COMPONENT = "langchain"


def usage_from_metadata(usage: Mapping[str, Any]) -> TokenUsage:
    """costwatch's partition of a LangChain ``UsageMetadata``.

    LangChain's ``input_tokens`` is every input-side token: ``input_token_details.cache_read``
    and the cache writes (``cache_creation``, or its ``ephemeral_5m_input_tokens`` and
    ``ephemeral_1h_input_tokens`` split) are inside it; ``output_tokens`` includes
    ``output_token_details.reasoning``.  Audio details are subsets of input and output.
    """
    details_in = usage.get("input_token_details") or {}
    details_out = usage.get("output_token_details") or {}
    cache_read = int(details_in.get("cache_read") or 0)
    write_1h = int(details_in.get("ephemeral_1h_input_tokens") or 0)
    write_5m = int(details_in.get("ephemeral_5m_input_tokens") or 0)
    cache_write = int(details_in.get("cache_creation") or 0) + write_5m + write_1h
    reasoning = int(details_out.get("reasoning") or 0)
    return TokenUsage(
        input=int(usage.get("input_tokens") or 0) - cache_read - cache_write,
        cache_read=cache_read,
        cache_write=cache_write,
        output=int(usage.get("output_tokens") or 0) - reasoning,
        reasoning=reasoning,
        cache_write_1h=write_1h,
        input_audio=int(details_in.get("audio") or 0),
        output_audio=int(details_out.get("audio") or 0),
    )


def _model_of(metadata: Mapping[str, Any] | None, params: Mapping[str, Any] | None) -> str:
    value = metadata.get("ls_model_name") if metadata else None
    if not (isinstance(value, str) and value) and params:
        value = params.get("model")
        if not (isinstance(value, str) and value):
            value = params.get("model_name")
    return value if isinstance(value, str) else ""


def _messages(messages: Sequence[Any] | None) -> list[dict[str, str]] | None:
    """LangChain messages as the recorder's estimator takes them (text parts only)."""
    if messages is None:
        return None
    out: list[dict[str, str]] = []
    for message in messages:
        content = getattr(message, "content", "")
        if isinstance(content, list):
            content = "".join(
                p if isinstance(p, str) else str(p.get("text", "")) if isinstance(p, dict) else ""
                for p in content
            )
        out.append({"role": str(getattr(message, "type", "user")), "content": str(content)})
    return out


def _prompt_of(run: ModelRun) -> object:
    """The run's prompt as the estimator takes it, from what its start callback was given."""
    if run.operation == "chat":
        return _messages(run.prompt)  # type: ignore[arg-type]
    return "\n".join(run.prompt)  # type: ignore[arg-type]


class CostwatchCallbackHandler(_BaseCallbackHandler):  # type: ignore[misc]
    """Records LangChain chat model, LLM and retriever runs in costwatch.

    ``provider`` prices every model run as that provider's (default: the provider LangChain
    names in the run's ``ls_provider`` metadata).  Runs inline (``run_inline``), in the
    context of the run, so costwatch's tags and request apply.
    """

    run_inline = True
    raise_error = True  # costwatch reports its own failures (raised only in strict mode)

    def __init__(self, *, provider: str | None = None) -> None:
        super().__init__()
        self._provider = provider
        self._runs: dict[UUID, ModelRun] = {}
        self._retrievals: dict[UUID, tuple[float, str]] = {}
        self._specs = Specs()

    # --- models ----------------------------------------------------------------------------

    def _start(
        self,
        run_id: UUID,
        operation: str,
        prompt: object,
        metadata: Mapping[str, Any] | None,
        kwargs: Mapping[str, Any],
    ) -> None:
        try:
            params = kwargs.get("invocation_params")
            provider = self._provider or str((metadata or {}).get("ls_provider") or "unknown")
            model = _model_of(metadata, params if isinstance(params, Mapping) else None)
            self._runs[run_id] = ModelRun(provider, model, operation, prompt)
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[Any]],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        # the messages are read into the estimator's form only if the run reports no usage
        self._start(run_id, "chat", messages[0] if messages else None, metadata, kwargs)

    def on_llm_start(
        self,
        serialized: dict[str, Any],
        prompts: list[str],
        *,
        run_id: UUID,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self._start(run_id, "text_completion", prompts, metadata, kwargs)

    def on_llm_end(self, response: Any, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None or recorded_by_sdk(run.sdk_calls):
            return
        try:
            self._record(run, response)
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        run = self._runs.pop(run_id, None)
        if run is None or recorded_by_sdk(run.sdk_calls):
            return
        try:
            spec = self._specs.get(run.provider, "generation", run.operation)
            spec.emit_failure(run.model, error, perf_counter() - run.t0)
        except Exception as exc:
            errors.report(_COMPONENT, exc)

    def _record(self, run: ModelRun, response: Any) -> None:
        latency = perf_counter() - run.t0
        spec = self._specs.get(run.provider, "generation", run.operation)
        generations = [g for batch in response.generations for g in batch]
        message = getattr(generations[0], "message", None) if generations else None
        metadata = getattr(message, "response_metadata", None) or {}
        response_model = metadata.get("model_name") or metadata.get("model") or ""
        usage: TokenUsage | None = None
        usage_metadata = getattr(message, "usage_metadata", None)
        if usage_metadata:
            usage = usage_from_metadata(usage_metadata)
        else:
            token_usage = (response.llm_output or {}).get("token_usage")
            if token_usage:
                usage = extract_provider_usage(run.provider, token_usage)
        if usage is not None:
            prompt, text = None, None  # only an estimate reads them
        else:
            prompt = _prompt_of(run)
            text = "".join(getattr(g, "text", "") for g in generations)
        spec.emit(
            run.model or response_model,
            usage,
            latency,
            response_model=response_model if isinstance(response_model, str) else "",
            usage_source="reported" if usage is not None else "estimated",
            prompt=prompt,
            estimate_text=text,
        )

    # --- retrievers ------------------------------------------------------------------------

    def on_retriever_start(
        self, serialized: dict[str, Any] | None, query: str, *, run_id: UUID, **kwargs: Any
    ) -> None:
        name = kwargs.get("name") or (serialized or {}).get("name") or "retriever"
        self._retrievals[run_id] = (perf_counter(), str(name))

    def on_retriever_end(self, documents: Sequence[Any], *, run_id: UUID, **kwargs: Any) -> None:
        self._retrieved(run_id, documents, None)

    def on_retriever_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        self._retrieved(run_id, (), error)

    def _retrieved(
        self, run_id: UUID, documents: Sequence[Any], error: BaseException | None
    ) -> None:
        started = self._retrievals.pop(run_id, None)
        if started is None:
            return
        t0, source = started
        try:
            spec = self._specs.get("vectorstore", "retrieval", "retrieval", source)
            if error is not None:
                spec.emit_failure(source, error, perf_counter() - t0)
                return
            texts = _document_texts(list(documents))
            spec.emit(source, EMPTY_USAGE, perf_counter() - t0, context_texts=texts)
        except Exception as exc:
            errors.report(_COMPONENT, exc)
