"""Read billed tokens from provider responses into the ``TokenUsage`` partition.

Runs on every wrapped call, so the reader for a response *class* is chosen once and cached;
reading is then a handful of attribute lookups (no ``isinstance`` chains, no ``model_dump``).
SDK objects (pydantic models) and plain dicts (JSON bodies) are both understood, and every
detail field may be ``None`` or missing.  How each provider's counts map onto the partition is
each provider's own module's knowledge (``capture.providers``); this module only recognises
which shape an object has and caches that choice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, get_args

from costwatch._core.failopen import errors
from costwatch._core.memo import BoundedMemo
from costwatch._core.record import EMPTY_USAGE, SERVICE_TIERS, InvalidUsage, Tokens, TokenUsage
from costwatch.capture.providers import anthropic, gemini, openai

if TYPE_CHECKING:
    from costwatch._core.record import CostRecord
    from costwatch.accounting._recorder import CallSpec
    from costwatch.budgets._budget import Reservation

UsageReader = Callable[[Any], Tokens]
ResponseReader = Callable[[Any], "tuple[Tokens, str] | None"]


# --- usage sub-objects ---------------------------------------------------------------------


def _fields_of(cls: type) -> frozenset[str] | None:
    """Attribute names every instance of ``cls`` has (pydantic models, dataclasses), else None."""
    fields = getattr(cls, "model_fields", None)
    if isinstance(fields, Mapping):
        return frozenset(fields)
    fields = getattr(cls, "__dataclass_fields__", None)
    if isinstance(fields, Mapping):
        return frozenset(fields)
    return None


def _usage_reader_for(names: frozenset[str] | set[str], provider: str) -> UsageReader | None:
    if "prompt_tokens" in names or "completion_tokens" in names:
        return openai.completion_usage
    if "prompt_token_count" in names:
        return gemini.usage
    if "input_tokens" in names or "output_tokens" in names:
        if provider == "anthropic" or not anthropic.ONLY_FIELDS.isdisjoint(names):
            return anthropic.usage
        return openai.responses_usage
    return None


def _dict_usage(u: Mapping[str, Any], provider: str) -> Tokens | None:
    """Classify a usage dict by its keys; ``None`` when it has no shape we know."""
    if "prompt_tokens" in u or "completion_tokens" in u:
        return openai.dict_usage(u)
    if "input_tokens" in u or "output_tokens" in u:
        if provider != "anthropic" and "input_tokens_details" in u:
            return openai.dict_usage(u)
        return anthropic.dict_usage(u)
    if "prompt_token_count" in u or "promptTokenCount" in u:
        return gemini.dict_usage(u)
    return None


def _instance_names(obj: object) -> set[str]:
    names = getattr(obj, "__dict__", None)
    found = set(names) if isinstance(names, Mapping) else set()
    for name in ("prompt_tokens", "prompt_token_count", "input_tokens", "output_tokens"):
        if hasattr(obj, name):
            found.add(name)
    return found


_usage_readers: BoundedMemo[type, UsageReader | None] = BoundedMemo()
_UNKNOWN: Any = object()


def read_usage(provider: str, usage_obj: object) -> Tokens | None:
    """The partition of a provider's ``usage`` sub-object (SDK model or dict), or None.

    ``provider`` settles the one ambiguous shape (``input_tokens``/``output_tokens`` with
    details of both kinds): ``"anthropic"`` means cache tokens are reported beside
    ``input_tokens``.
    """
    cls = type(usage_obj)
    reader = _usage_readers.get(cls, _UNKNOWN)
    if reader is _UNKNOWN:
        if isinstance(usage_obj, Mapping):
            return _dict_usage(usage_obj, provider)
        fields = _fields_of(cls)
        if fields is None:
            # A class whose attribute set may vary per instance: classify this one object.
            reader = _usage_reader_for(_instance_names(usage_obj), provider)
        else:
            reader = _usage_readers.remember(cls, _usage_reader_for(fields, provider))
    return None if reader is None else reader(usage_obj)


def extract_provider_usage(provider: str, usage_obj: object) -> TokenUsage:
    """The ``TokenUsage`` of a provider's ``usage`` sub-object; ``ValueError`` for an object of
    no known shape."""
    tokens = read_usage(provider, usage_obj)
    if tokens is None:
        raise ValueError(
            f"costwatch: unrecognised {provider or 'provider'} usage object "
            f"of type {type(usage_obj).__name__}"
        )
    return TokenUsage.of(tokens)


# --- whole responses -------------------------------------------------------------------------


def _no_usage(obj: Any) -> None:
    return None


def _read_sdk_response(obj: Any) -> tuple[Tokens, str] | None:
    usage_obj = obj.usage
    if usage_obj is None:
        return None
    tokens = read_usage("", usage_obj)
    if tokens is None:
        return None
    return tokens, getattr(obj, "model", None) or ""


def _read_tiered_response(obj: Any) -> tuple[Tokens, str] | None:
    """A response class with a ``service_tier`` field (OpenAI): the tier that served it.

    Only for classes that declare the field: reading a missing attribute of a pydantic model
    raises inside its ``__getattr__``, which costs microseconds."""
    found = _read_sdk_response(obj)
    if found is None:
        return None
    tier = obj.service_tier
    return (openai.at_tier(found[0], tier), found[1]) if tier in SERVICE_TIERS else found


def _read_responses_api(obj: Any) -> tuple[Tokens, str] | None:
    """An OpenAI Responses API response: its usage, its tier, and the hosted tool calls in its
    output (looked for only when the response lists tools: most calls have none)."""
    found = _read_tiered_response(obj)
    if found is None or not obj.tools or not obj.output:
        return found
    return openai.with_tool_calls(found[0], obj.output), found[1]


def _read_dict_response(obj: Mapping[str, Any]) -> tuple[Tokens, str] | None:
    usage_obj = obj.get("usage")
    if usage_obj is None:
        return gemini.read_dict_response(obj)
    tokens = read_usage("", usage_obj)
    if tokens is None:
        return None
    return openai.served_dict(tokens, obj), obj.get("model") or ""


def _read_any_object(obj: Any) -> tuple[Tokens, str] | None:
    """Objects whose attributes may differ per instance: look each time."""
    if getattr(obj, "usage", None) is not None:
        return _read_sdk_response(obj)
    if getattr(obj, "usage_metadata", None) is not None:
        return gemini.read_response(obj)
    return None


def _read_chat_completion(obj: Any) -> tuple[Tokens, str] | None:
    """OpenAI's fused chat-completion reader; the first response of its class whose usage or a
    detail is missing (servers that send no details) hands the class to the general reader for
    good."""
    found = openai.read_chat_completion(obj)
    if found is not None:
        return found
    cls = type(obj)
    reader = _sdk_response_reader(cls, _fields_of(cls) or frozenset(), fused=False)
    _response_readers[cls] = reader
    return reader(obj)


def _declared_usage_class(cls: type) -> type | None:
    """The one class a pydantic response class declares for ``usage`` (``Optional`` unwrapped)."""
    field = getattr(cls, "model_fields", {}).get("usage")
    annotation = getattr(field, "annotation", None)
    options = [a for a in (get_args(annotation) or (annotation,)) if a is not type(None)]
    if len(options) == 1 and isinstance(options[0], type):
        return options[0]
    return None


def _sdk_response_reader(cls: type, fields: frozenset[str], fused: bool = True) -> ResponseReader:
    """The reader for a response class; ``fused=False``: not the fused chat-completion one
    (a response of the class lacked a detail it reads)."""
    usage_cls = _declared_usage_class(cls) if fused else None
    if usage_cls is not None and "model" in fields and "service_tier" in fields:
        usage_fields = _fields_of(usage_cls) or frozenset()
        if usage_fields.issuperset(openai.COMPLETION_FIELDS):
            return _read_chat_completion
    if "output" in fields:
        return _read_responses_api
    if "service_tier" in fields:
        return _read_tiered_response
    return _read_sdk_response


_UNCACHEABLE = (str, bytes, int, float, bool, type(None), list, tuple)


def _response_reader_for(cls: type) -> ResponseReader:
    if issubclass(cls, Mapping):
        return _read_dict_response
    if issubclass(cls, _UNCACHEABLE):
        return _no_usage
    fields = _fields_of(cls)
    if fields is None:
        return _read_any_object
    if "usage" in fields:
        return _sdk_response_reader(cls, fields)
    if "usage_metadata" in fields:
        return gemini.read_response
    return _no_usage


_response_readers: BoundedMemo[type, ResponseReader] = BoundedMemo()


def extract_tokens(obj: object) -> tuple[Tokens, str] | None:
    """``(tokens, response_model or "")`` from a provider response (SDK object or dict).

    ``None`` when the object carries no usage (a stream, a list, a response without usage).
    """
    cls = type(obj)
    reader = _response_readers.get(cls)
    if reader is None:
        reader = _response_readers.remember(cls, _response_reader_for(cls))
    return reader(obj)


cached_reader: Callable[[type], ResponseReader | None] = _response_readers.get
"""The reader :func:`extract_tokens` has cached for a response class, or None: the call path
calls it directly (``read(result)``), which saves a function call."""


def extract_usage(obj: object) -> tuple[TokenUsage, str] | None:
    """``(usage, response_model or "")``: :func:`extract_tokens` as a ``TokenUsage``."""
    found = extract_tokens(obj)
    return None if found is None else (TokenUsage.of(found[0]), found[1])


def record_invalid(
    spec: CallSpec,
    model: str,
    exc: InvalidUsage,
    latency_s: float,
    reservation: Reservation | None,
    *,
    incomplete: bool = False,
) -> CostRecord | None:
    """Record a call whose response reported usage that is not a count (a negative, fractional
    or non-numeric count): ``usage_source="invalid"``, no tokens, so nothing is charged and no
    counter moves; then count it in ``costwatch_internal_errors_total{component="usage"}``."""
    record = spec.emit(
        model,
        EMPTY_USAGE,
        latency_s,
        usage_source="invalid",
        incomplete=incomplete,
        reservation=reservation,
    )
    errors.report("usage", exc)
    return record
