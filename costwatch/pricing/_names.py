"""Provider and model names: aliases, the snapshot-suffix rules, provider inference.

A model name resolves to a known model only through a **well-formed** snapshot suffix: a date
that is a valid date (``-2024-07-18``, ``-20250929``, ``@20240620``), OpenAI's legacy ``-MMDD``
(``-0613``), Mistral's ``-YYMM`` (``-2503``), ``-latest`` / ``@latest``, Google's ``-001``
stable versions, and the Bedrock (``us.anthropic.``... ``-v1:0``) and Vertex (``@20240620``)
id forms.  Anything else (``-2025929``, ``-ultra``, ``-v2``) is a different model: it has no
price unless a price file names it.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime

PROVIDER_ALIASES: dict[str, str] = {
    # OpenAI and Azure OpenAI
    "openai": "openai",
    "azure": "azure",
    "azure_openai": "azure",
    "azure-openai": "azure",
    "azureopenai": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    # Anthropic
    "anthropic": "anthropic",
    "claude": "anthropic",
    # Google (Gemini API and Vertex AI)
    "google": "google",
    "gemini": "google",
    "google_genai": "google",
    "google-genai": "google",
    "google.genai": "google",
    "vertex": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gcp.gemini": "google",
    "gcp.vertex_ai": "google",
    "gcp.gen_ai": "google",
    # AWS Bedrock
    "aws": "aws",
    "bedrock": "aws",
    "aws.bedrock": "aws",
    "aws_bedrock": "aws",
    "amazon": "aws",
    # others, spelled the way SDKs and the OTel GenAI conventions spell them
    "mistral": "mistral",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "cohere": "cohere",
    "voyage": "voyageai",
    "voyageai": "voyageai",
    "voyage_ai": "voyageai",
    "xai": "x-ai",
    "x-ai": "x-ai",
    "grok": "x-ai",
    "deepseek": "deepseek",
    "groq": "groq",
    "together": "together",
    "together_ai": "together",
    "togetherai": "together",
    "fireworks": "fireworks",
    "fireworks_ai": "fireworks",
    "perplexity": "perplexity",
    "openrouter": "openrouter",
}


def canonical_provider(provider: str) -> str:
    """Provider id as genai-prices spells it (``azure_openai`` -> ``azure``).

    ``gemini``/``vertex_ai`` -> ``google``; unknown providers come back lower-cased.
    """
    key = provider.strip().lower()
    return PROVIDER_ALIASES.get(key, key)


_BEDROCK_PREFIX = re.compile(
    r"^(?:(?:us|eu|apac|au|jp|ca|global|regional|us-gov)\.)?"
    r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer)\."
)
_BEDROCK_VERSION = re.compile(r"-v\d+:\d+$")
_SUFFIX = re.compile(
    r"(?P<sep>[-@])(?:"
    r"(?P<iso>(?P<y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2}))"  # openai    -2024-07-18
    r"|(?P<ymd>\d{8})"  # anthropic -20240620, vertex @20240620
    r"|(?P<four>\d{4})"  # openai legacy -0613 (MMDD), mistral -2503 (YYMM)
    r"|(?P<stable>\d{3})"  # google stable -001, vertex @001
    r"|(?P<latest>latest)"
    r")$"
)


def _valid(year: int, month: int, day: int) -> bool:
    try:
        date(year, month, day)
    except ValueError:
        return False
    return 2020 <= year <= 2099


def snapshot_suffix(name: str) -> tuple[str, date | None, bool] | None:
    """``(base, snapshot date, is -latest)`` when ``name`` ends in a well-formed snapshot
    suffix, else None.  The date is None for ``-latest``, ``-001`` and legacy ``-MMDD``."""
    found = _SUFFIX.search(name)
    if found is None or found.start() == 0:
        return None
    base = name[: found.start()]
    if found["iso"]:
        y, m, d = int(found["y"]), int(found["m"]), int(found["d"])
        return (base, date(y, m, d), False) if _valid(y, m, d) else None
    if found["ymd"]:
        digits = found["ymd"]
        y, m, d = int(digits[:4]), int(digits[4:6]), int(digits[6:])
        return (base, date(y, m, d), False) if _valid(y, m, d) else None
    if found["four"]:
        digits = found["four"]
        a, b = int(digits[:2]), int(digits[2:])
        if 23 <= a <= 39 and 1 <= b <= 12:  # Mistral -YYMM
            return base, date(2000 + a, b, 1), False
        if _valid(2024, a, b):  # OpenAI legacy -MMDD
            return base, None, False
        return None
    if found["stable"]:
        return base, None, False
    return base, None, True


def _strip_snapshots(name: str) -> list[tuple[str, date | None, bool]]:
    """Each successive well-formed suffix removed (``-latest`` after a date is not a thing,
    but ``-v1:0`` then a date is the Bedrock form, handled by the caller)."""
    out: list[tuple[str, date | None, bool]] = []
    for _ in range(2):
        found = snapshot_suffix(name)
        if found is None:
            break
        out.append(found)
        name = found[0]
    return out


def model_candidates(model: str) -> tuple[str, ...]:
    """Names to try for ``model``, most specific first.

    The name as given (lower-cased), then without ``models/`` / Vertex resource prefixes,
    without a ``provider/`` prefix, without Bedrock region and vendor prefixes (and the
    Bedrock ``-v1:0`` version), and without well-formed snapshot suffixes.  A ``-YYMM`` or
    dated snapshot of a model also yields ``BASE-latest`` (Mistral names the moving alias so).
    A fine-tuned ``ft:BASE:org:name:id`` (or Azure's ``BASE.ft-id``) also yields ``ft:BASE``
    and ``ft:BASE-without-date``, which is how the bundled ``ft:`` prices are keyed.
    """
    name = model.strip().lower()
    out: list[str] = []

    def add(candidate: str) -> None:
        if candidate and candidate not in out:
            out.append(candidate)

    add(name)
    if name.startswith("ft:") or ".ft-" in name:
        base = name[3:].split(":", 1)[0] if name.startswith("ft:") else name.split(".ft-", 1)[0]
        add("ft:" + base)
        for stripped, _, _ in _strip_snapshots(base):
            add("ft:" + stripped)
        return tuple(out)
    base = name
    if "/models/" in base:
        base = base.rsplit("/models/", 1)[1]
    elif base.startswith("models/"):
        base = base[len("models/") :]
    add(base)
    prefix, sep, rest = base.partition("/")
    if sep and prefix in PROVIDER_ALIASES:
        base = rest
        add(base)
    bedrock = _BEDROCK_PREFIX.sub("", base)
    if bedrock != base:
        base = _BEDROCK_VERSION.sub("", bedrock)
        add(bedrock)
        add(base)
    for stripped, _, latest in _strip_snapshots(base):
        add(stripped)
        if not latest:
            add(stripped + "-latest")
    return tuple(out)


def base_name(model: str) -> str:
    """The model with every prefix and well-formed snapshot suffix removed
    (``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` -> ``claude-sonnet-4-5``)."""
    candidates = [c for c in model_candidates(model) if not c.endswith("-latest")]
    return candidates[-1] if candidates else model.strip().lower()


def snapshot_date(model: str) -> datetime | None:
    """The date a dated snapshot name carries (``mistral-small-2503`` -> 2025-03-01), UTC."""
    name = model.strip().lower()
    name = _BEDROCK_VERSION.sub("", _BEDROCK_PREFIX.sub("", name.rsplit("/", 1)[-1]))
    found = snapshot_suffix(name)
    if found is None or found[1] is None:
        return None
    day = found[1]
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


_OPENAI_PREFIXES = (
    "gpt-",
    "chatgpt-",
    "text-embedding-",
    "davinci",
    "babbage",
    "dall-e",
    "whisper",
    "tts-",
    "omni-moderation",
    "codex-",
    "computer-use",
)
_O_SERIES = re.compile(r"^o\d(?:-|$)")


def infer_provider(model: str) -> str | None:
    """Best guess of the provider from a model name (for the CLI, where it may be omitted)."""
    name = model.strip().lower()
    if name.startswith("models/"):
        name = name[len("models/") :]
    known = vendor(name)
    if known is not None:
        return known
    if _BEDROCK_PREFIX.match(name):
        return "aws"
    try:
        from genai_prices import data_snapshot

        found = data_snapshot.get_snapshot().find_provider(name, None, None)
    except LookupError:
        return None
    return str(found.id)


def vendor(name: str) -> str | None:
    """The company that makes a model family, by its name alone (``claude-...`` ->
    ``anthropic``): the first party whose prices other routes (Bedrock, Vertex, Azure) follow."""
    if name.startswith(("ft:", *_OPENAI_PREFIXES)) or ".ft-" in name or _O_SERIES.match(name):
        return "openai"
    if name.startswith("claude"):
        return "anthropic"
    if name.startswith(("gemini", "tunedmodels/")):
        return "google"
    if name.startswith(("embed-", "command", "rerank-v", "rerank-english", "rerank-multilingual")):
        return "cohere"
    if name.startswith(("voyage", "rerank-2")):
        return "voyageai"
    if name.startswith(("mistral", "mixtral", "codestral", "ministral", "pixtral", "magistral")):
        return "mistral"
    if name.startswith("grok"):
        return "x-ai"
    if name.startswith("deepseek"):
        return "deepseek"
    return None


def provider_for_url(url: str) -> str | None:
    """The provider whose API lives at ``url``, by genai-prices' API URL patterns
    (``https://api.groq.com/openai/v1`` -> ``groq``); None for a local server or an unknown
    host."""
    from genai_prices import data_snapshot

    try:
        found = data_snapshot.get_snapshot().find_provider(None, None, url)
    except LookupError:
        return None
    return str(found.id)


def looks_fine_tuned(model: str) -> bool:
    name = model.strip().lower()
    return name.startswith("ft:") or ".ft-" in name or name.startswith("tunedmodels/")
