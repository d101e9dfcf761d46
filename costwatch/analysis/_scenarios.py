"""What-if scenarios, from a small YAML file (or the same structure as a dict).

::

    monthly_requests: 250000          # optional: the volume to evaluate at (else observed)
    success_range: [0.80, 0.95]       # optional: sensitivity of cost per successful answer
    current:                          # optional: how to amortise the observed pipelines' runs
      classify_ticket: {retrain_every_days: 30}
      answer_question: {reindex_every_days: 7, monthly_requests: 300000}
    candidates:
      - name: fine-tuned gpt-4o-mini
        pipeline: answer_question     # the observed pipeline it would replace
        kind: fine_tuned              # fine_tuned | rag | hybrid | model_swap
        base_model: gpt-4o-mini
        training_tokens: 2000000
        epochs: 3
        retrain_every_days: 30
        hosting_usd_per_hour: 0
        success_rate: 0.88            # assumed (shown as such)
      - name: RAG on gpt-4o-mini
        pipeline: classify_ticket
        kind: rag
        model: gpt-4o-mini
        embedding_model: text-embedding-3-small
        query_tokens: 40
        context_tokens: 1600
        documents: 5000
        tokens_per_document: 400
        reindex_every_days: 7
        reranker: {provider: cohere, model: rerank-v3.5}
        vector_store_usd_per_month: 50
        success_rate: 0.93

Every amount is USD; a month is 30 days.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from costwatch._core.errors import ConfigError

_Rate = Field(default=None, ge=0, le=1)
_Usd = Field(default=None, ge=0, allow_inf_nan=False)


class Reranker(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = "cohere"
    model: str = "rerank-v3.5"


class Candidate(BaseModel):
    """One alternative to an observed pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    pipeline: str = Field(min_length=1)
    kind: Literal["fine_tuned", "rag", "hybrid", "model_swap"]
    provider: str = "openai"
    model: str | None = None
    """The generation model; for ``fine_tuned`` / ``hybrid`` default ``ft:<base_model>``."""
    base_model: str | None = None
    prompt_tokens: Decimal | None = _Usd
    """Fresh input tokens per request (default: as observed)."""
    output_tokens: Decimal | None = _Usd
    """Output tokens per request (default: as observed)."""
    success_rate: Decimal | None = _Rate
    # fine-tuning
    training_tokens: int | None = Field(default=None, ge=0)
    epochs: int = Field(default=1, ge=1)
    training_usd_per_mtok: Decimal | None = _Usd
    retrain_every_days: Decimal = Field(default=Decimal(30), gt=0)
    hosting_usd_per_hour: Decimal | None = _Usd
    hosting_usd_per_month: Decimal | None = _Usd
    # retrieval
    embedding_provider: str = "openai"
    embedding_model: str = "text-embedding-3-small"
    query_tokens: Decimal | None = _Usd
    context_tokens: Decimal | None = _Usd
    documents: int | None = Field(default=None, ge=0)
    tokens_per_document: Decimal | None = _Usd
    reindex_every_days: Decimal = Field(default=Decimal(30), gt=0)
    reranker: Reranker | None = None
    rerank_usd_per_query: Decimal | None = _Usd
    retrieval_usd_per_query: Decimal | None = _Usd
    vector_store_usd_per_month: Decimal | None = _Usd

    @model_validator(mode="after")
    def _needs(self) -> Candidate:
        if self.kind in ("fine_tuned", "hybrid") and not (self.base_model or self.model):
            raise ValueError(f"a {self.kind} candidate needs base_model (or model)")
        if self.kind == "model_swap" and not self.model:
            raise ValueError("a model_swap candidate needs model")
        if self.hosting_usd_per_hour is not None and self.hosting_usd_per_month is not None:
            raise ValueError("give hosting_usd_per_hour or hosting_usd_per_month, not both")
        return self


class Current(BaseModel):
    """How to read an observed pipeline: its runs' cadence, an assumed success rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    retrain_every_days: Decimal = Field(default=Decimal(30), gt=0)
    reindex_every_days: Decimal = Field(default=Decimal(30), gt=0)
    success_rate: Decimal | None = _Rate
    """Used only when the pipeline recorded no outcomes (shown as assumed)."""
    monthly_requests: Decimal | None = Field(default=None, gt=0)
    """This pipeline's volume to evaluate at (over the file's ``monthly_requests``)."""


class Scenarios(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    monthly_requests: Decimal | None = Field(default=None, gt=0)
    success_range: tuple[Decimal, Decimal] | None = None
    current: dict[str, Current] = Field(default_factory=dict)
    candidates: list[Candidate] = Field(default_factory=list)

    @model_validator(mode="after")
    def _range(self) -> Scenarios:
        if self.success_range is not None:
            lo, hi = self.success_range
            if not (0 < lo <= hi <= 1):
                raise ValueError("success_range must be [low, high] with 0 < low <= high <= 1")
        return self

    def current_for(self, pipeline: str) -> Current:
        return self.current.get(pipeline) or Current()


def load_scenarios(source: str | os.PathLike[str] | Mapping[str, Any] | None) -> Scenarios:
    """Validate a scenarios YAML file (path) or dict; errors name the field."""
    if source is None:
        return Scenarios()
    data: Any = source
    if isinstance(source, (str, os.PathLike)):
        import yaml

        with open(source, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    try:
        return Scenarios.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in ("scenarios", *first["loc"]))
        raise ConfigError(where, first.get("input"), first["msg"]) from None
