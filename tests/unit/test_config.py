"""configure(): argument > COSTWATCH_* environment variable > default; bad values name the field."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import costwatch
from costwatch._configure import runtime


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    yield
    costwatch._configure.shutdown()


def test_defaults_apply_when_nothing_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = costwatch.configure(prometheus=False)
    assert settings.service == "default"
    assert settings.estimate_missing_usage is True
    assert settings.label_limits == {"tenant": 100, "feature": 100}
    assert settings.strict is False


def test_environment_fills_what_arguments_leave_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTWATCH_SERVICE", "from-env")
    monkeypatch.setenv("COSTWATCH_ESTIMATE_MISSING_USAGE", "false")
    monkeypatch.setenv("COSTWATCH_LABEL_LIMITS", "tenant=5,feature=7")
    monkeypatch.setenv("COSTWATCH_PROMETHEUS", "0")
    settings = costwatch.configure()
    assert settings.service == "from-env"
    assert settings.estimate_missing_usage is False
    assert settings.label_limits == {"tenant": 5, "feature": 7}
    assert runtime().settings is settings


def test_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTWATCH_SERVICE", "from-env")
    settings = costwatch.configure(service="from-arg", prometheus=False)
    assert settings.service == "from-arg"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"redis_url": "http://localhost:6379"}, "redis_url"),
        ({"label_limits": {"tenant": 0}}, "label_limits"),
        ({"service": ""}, "service"),
        ({"service": "two words"}, "service"),
        ({"redis_timeout_s": -1}, "redis_timeout_s"),
    ],
)
def test_invalid_arguments_raise_config_error_naming_the_field(
    kwargs: dict[str, object], field: str
) -> None:
    with pytest.raises(costwatch.ConfigError) as info:
        costwatch.configure(prometheus=False, **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert field in str(info.value)


def test_invalid_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSTWATCH_OTEL", "perhaps")
    with pytest.raises(costwatch.ConfigError) as info:
        costwatch.configure(prometheus=False)
    assert info.value.field == "otel"
    assert "perhaps" in str(info.value)
    monkeypatch.setenv("COSTWATCH_OTEL", "false")
    monkeypatch.setenv("COSTWATCH_LABEL_LIMITS", "tenant")
    with pytest.raises(costwatch.ConfigError) as info:
        costwatch.configure(prometheus=False)
    assert info.value.field == "COSTWATCH_LABEL_LIMITS"
