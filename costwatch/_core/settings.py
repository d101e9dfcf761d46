"""Settings: ``configure()`` arguments, then ``COSTWATCH_*`` environment, then defaults."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from costwatch._core.errors import ConfigError
from costwatch._core.redis import URL_SCHEMES

ENV_PREFIX = "COSTWATCH_"


class Settings(BaseModel):
    """Validated configuration.  Every field can also come from ``COSTWATCH_<FIELD>``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    service: str = Field(default="default", min_length=1, max_length=128)
    redis_url: str | None = None
    redis_cluster: bool = False
    """``redis_url`` names a node of a Redis Cluster (also said by a ``redis+cluster://`` URL)."""
    prices: str | dict[str, Any] | None = None
    """A YAML file of user prices, or the same structure as a dict (negotiated, self-hosted)."""
    prometheus: bool = True
    otel: bool = False
    otel_spans: bool = False
    estimate_missing_usage: bool = True
    label_limits: dict[str, int] = Field(default_factory=lambda: {"tenant": 100, "feature": 100})
    strict: bool = False
    redis_timeout_s: float = Field(default=0.1, gt=0, le=30)
    warm_up: bool = True
    """Load price data and tokenizer files in a background thread at ``configure()``, so the
    first wrapped call does not pay for them."""

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(URL_SCHEMES):
            raise ValueError("must start with " + ", ".join(URL_SCHEMES))
        return value

    @field_validator("label_limits")
    @classmethod
    def _positive_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for label, limit in value.items():
            if limit < 1:
                raise ValueError(f"limit for {label!r} must be at least 1")
        return value

    @field_validator("service")
    @classmethod
    def _service_chars(cls, value: str) -> str:
        if any(ch.isspace() for ch in value):
            raise ValueError("must not contain whitespace")
        return value


_FIELDS = tuple(Settings.model_fields)


def _parse_env_value(field: str, raw: str) -> Any:
    if field == "label_limits":
        raw = raw.strip()
        if raw.startswith("{"):
            return json.loads(raw)
        limits: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            name, sep, value = part.partition("=")
            if not sep:
                raise ValueError("expected label=limit pairs separated by commas")
            limits[name.strip()] = int(value)
        return limits
    return raw


def load_settings(
    arguments: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge ``arguments`` (not None) over ``COSTWATCH_*`` environment values over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for field in _FIELDS:
        raw = env.get(ENV_PREFIX + field.upper())
        if raw is not None and raw != "":
            try:
                values[field] = _parse_env_value(field, raw)
            except ValueError as exc:
                raise ConfigError(ENV_PREFIX + field.upper(), raw, str(exc)) from None
    for field, value in arguments.items():
        if field not in _FIELDS:
            raise ConfigError(field, value, "unknown setting")
        if value is not None:
            values[field] = value
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "settings"
        raise ConfigError(field, values.get(field), first["msg"]) from None
