"""What the framework integrations share: the lazy import of a framework with an install
hint, the specs their records are made with, and the rule that leaves a model call to the
SDK instrumentation when it recorded the call itself."""

from __future__ import annotations

import importlib
import threading
from time import perf_counter
from types import ModuleType

from costwatch.accounting._recorder import CallSpec
from costwatch.capture._instrument_calls import SdkCalls, watch_sdk_calls


def require(module: str, extra: str) -> ModuleType:
    """Import ``module``, or raise ImportError saying which costwatch extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"costwatch's {extra} integration needs {module.split('.')[0]}: "
            f"pip install 'costwatch[{extra}]'"
        ) from exc


class Specs:
    """One ``CallSpec`` per (provider, stage, operation, source), made on first use: a spec
    memoises its price lookups, so a framework's calls reuse theirs."""

    __slots__ = ("_specs", "_lock")

    def __init__(self) -> None:
        self._specs: dict[tuple[str, str, str, str], CallSpec] = {}
        self._lock = threading.Lock()

    def get(self, provider: str, stage: str, operation: str, source: str = "") -> CallSpec:
        key = (provider, stage, operation, source)
        spec = self._specs.get(key)
        if spec is None:
            with self._lock:
                spec = self._specs.get(key)
                if spec is None:
                    if stage == "retrieval":
                        from decimal import Decimal

                        spec = CallSpec(
                            provider, source, stage, operation, source=source, price_usd=Decimal(0)
                        )
                    else:
                        spec = CallSpec(provider, "", stage, operation)
                    self._specs[key] = spec
        return spec


class ModelRun:
    """A framework's model or embedding call between its start and end callbacks."""

    __slots__ = ("t0", "provider", "model", "operation", "prompt", "sdk_calls")

    def __init__(self, provider: str, model: str, operation: str, prompt: object) -> None:
        self.t0 = perf_counter()
        self.provider = provider
        self.model = model
        self.operation = operation
        self.prompt = prompt
        """What the recorder estimates the input from when the framework reports no usage, as
        the framework gave it (converted for the estimator only then)."""
        self.sdk_calls = start_model_call()


def start_model_call() -> SdkCalls:
    """A framework's model call starts in this context: count the SDK calls costwatch's
    instrumentation records from here, so that ``recorded_by_sdk`` tells at its end."""
    return watch_sdk_calls()


def recorded_by_sdk(calls: SdkCalls | None) -> bool:
    """Whether instrumentation (``costwatch.instrument()``) already recorded the SDK call(s)
    this model call made: the SDK's record wins (it saw the exact response, the provider
    behind the base URL and ran the budget preflight), the framework's is skipped."""
    return calls is not None and calls.count > 0
