"""``record_batch_results()``: price the results of an OpenAI or Anthropic batch at the batch rate.

A batch is submitted once and its results come back hours later, as JSON lines: OpenAI's output
file (``{"custom_id", "response": {"status_code", "body"}, "error"}``, the body a chat
completion, a Responses API response or an embeddings list) and Anthropic's results
(``{"custom_id", "result": {"type": "succeeded", "message"}}``, also as the SDK's
``MessageBatchIndividualResponse`` objects).  Each result is recorded like a call: usage read
the way the provider reports it, priced at the model's batch rate, attributed to the tags in
force.  A request that failed, expired or was canceled is billed nothing and is recorded as an
error.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from costwatch._core.failopen import errors
from costwatch._core.record import EMPTY_USAGE, ZERO, CostRecord, InvalidUsage, TokenUsage
from costwatch.accounting._recorder import DEFAULT_OPERATION, CallSpec
from costwatch.capture._usage import extract_tokens, record_invalid

_SPECS: dict[tuple[str, str, bool], CallSpec] = {}


def record_batch_results(results: Iterable[Any]) -> list[CostRecord]:
    """Record every result of a finished batch; returns the records.

    ``results``: lines of an OpenAI batch output file or of Anthropic batch results (raw JSON
    text, parsed dicts, or the Anthropic SDK's result objects), in any mix.  Each succeeded
    request is priced at the model's batch rate (``CostRecord.batch``); a failed, expired or
    canceled one is recorded with ``status="error"`` and no tokens.
    """
    records: list[CostRecord] = []
    for item in results:
        try:
            record = _record_one(item)
        except Exception as exc:
            errors.report("batch", exc)
            continue
        if record is not None:
            records.append(record)
    return records


def _record_one(item: Any) -> CostRecord | None:
    if isinstance(item, str | bytes):
        if not item.strip():
            return None
        item = json.loads(item)
    if not isinstance(item, Mapping):
        item = item.model_dump() if hasattr(item, "model_dump") else vars(item)
    if "response" in item or ("error" in item and "result" not in item):
        return _openai(item)
    return _anthropic(item)


def _openai(line: Mapping[str, Any]) -> CostRecord | None:
    response = line.get("response") or {}
    body = response.get("body") or {}
    if line.get("error") or not 200 <= int(response.get("status_code") or 0) < 300:
        kind = "BatchRequestError"
        error = line.get("error") or body.get("error") or {}
        if isinstance(error, Mapping) and error.get("code"):
            kind = str(error["code"])
        return _failed("openai", str(body.get("model") or ""), kind)
    stage = "embedding" if body.get("object") == "list" else "generation"
    return _succeeded("openai", stage, body)


def _anthropic(line: Mapping[str, Any]) -> CostRecord | None:
    result = line.get("result") or {}
    if result.get("type") != "succeeded":
        return _failed("anthropic", "", f"batch_{result.get('type')}")
    return _succeeded("anthropic", "generation", result.get("message") or {})


def _succeeded(provider: str, stage: str, body: Mapping[str, Any]) -> CostRecord | None:
    model = str(body.get("model") or "")
    try:
        extracted = extract_tokens(body)
    except InvalidUsage as invalid:
        return record_invalid(_spec(provider, stage), model, invalid, 0.0, None)
    if extracted is None:  # a result without usage: nothing to price, nothing to estimate
        return _spec(provider, stage).emit(model, None, 0.0, usage_source="none")
    tokens, response_model = extracted
    return _spec(provider, stage).emit(
        model, TokenUsage.of(tokens), 0.0, response_model=response_model
    )


def _failed(provider: str, model: str, error_type: str) -> CostRecord | None:
    """A request the batch could not run: billed nothing (a fixed $0, never "unpriced")."""
    return _spec(provider, "generation", failed=True).emit(
        model, EMPTY_USAGE, 0.0, status="error", error_type=error_type, usage_source="none"
    )


def _spec(provider: str, stage: str, *, failed: bool = False) -> CallSpec:
    key = (provider, stage, failed)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = CallSpec(
            provider,
            "",
            stage,
            DEFAULT_OPERATION[stage],
            price_usd=ZERO if failed else None,
            batch=True,
        )
    return spec
