"""Token estimation: tiktoken with encodings seeded offline from ``bpe-openai``, else a heuristic.

tiktoken downloads its encoding files from the internet the first time an encoding is used.
On a request path that is an unbounded network call, so costwatch never lets it happen:
an encoding is loaded only once its file is verified to be in tiktoken's cache directory.
The files come from the ``bpe-openai`` package, which ships ``cl100k_base`` and ``o200k_base``
byte-identical to tiktoken's (same SHA-256); :func:`seed_tiktoken_cache` decompresses them into
the cache under the name tiktoken looks for (the SHA-1 hex of the blob URL, see
``tiktoken/load.py::read_file_cached``).  When that is impossible (no bpe-openai, unwritable
cache dir) counting falls back to a heuristic (~4 characters per token), marked
``method="heuristic"``, with one warning in the log.

Model -> encoding: ``o200k_base`` for gpt-4o, gpt-4.1, gpt-4.5, gpt-5, the o-series and gpt-oss;
``cl100k_base`` for gpt-4, gpt-3.5, the embeddings and every non-OpenAI model (Claude, Gemini,
Llama... have their own tokenizers; cl100k_base is an *estimate* for them, typically within
10-20 %).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import logging
import os
import re
import tempfile
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from costwatch._core.forks import new_lock

logger = logging.getLogger("costwatch")

_BLOB_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
ENCODING_SHA256: dict[str, str] = {
    # the expected_hash values in tiktoken_ext/openai_public.py
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}

CHARS_PER_TOKEN = 4
"""The heuristic: ~4 characters of English text per token (OpenAI's rule of thumb)."""

TOKENS_PER_MESSAGE = 3
"""Chat framing per message (``<|start|>{role}<|message|>`` ... ``<|end|>``), OpenAI cookbook."""
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
"""Every reply is primed with ``<|start|>assistant<|message|>``."""

_O200K = re.compile(r"^(?:ft:)?(?:gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o\d)(?:\b|-|$)")


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


def encoding_name_for(model: str) -> str:
    """``o200k_base`` for the GPT-4o generation onwards, ``cl100k_base`` for everything else."""
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    return "o200k_base" if _O200K.match(name) else "cl100k_base"


def blob_url(encoding: str) -> str:
    return f"{_BLOB_BASE}{encoding}.tiktoken"


def cache_key(encoding: str) -> str:
    """The file name tiktoken looks for in its cache: the SHA-1 hex digest of the blob URL."""
    return hashlib.sha1(blob_url(encoding).encode()).hexdigest()


def tiktoken_cache_dir() -> str | None:
    """The directory tiktoken reads from, exactly as ``tiktoken.load.read_file_cached`` picks
    it; ``None`` when caching is disabled (``TIKTOKEN_CACHE_DIR=""``)."""
    if "TIKTOKEN_CACHE_DIR" in os.environ:
        cache_dir = os.environ["TIKTOKEN_CACHE_DIR"]
    elif "DATA_GYM_CACHE_DIR" in os.environ:
        cache_dir = os.environ["DATA_GYM_CACHE_DIR"]
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    return cache_dir or None


def _cached_file_ok(path: str, encoding: str) -> bool:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    return hashlib.sha256(data).hexdigest() == ENCODING_SHA256[encoding]


def _bundled_encoding_bytes(encoding: str) -> bytes | None:
    """The decompressed encoding file shipped by bpe-openai, or None if unavailable.

    Located with ``find_spec`` rather than imported: importing ``bpe_openai`` builds its own
    tokenizers (~0.6 s), and only its data files are needed.
    """
    try:
        spec = importlib.util.find_spec("bpe_openai")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = os.path.join(location, "data", f"{encoding}.tiktoken.gz")
        try:
            with open(path, "rb") as fh:
                data = gzip.decompress(fh.read())
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        if hashlib.sha256(data).hexdigest() == ENCODING_SHA256[encoding]:
            return data
    return None


def seed_tiktoken_cache(cache_dir: str | None = None) -> str | None:
    """Copy bpe-openai's ``cl100k_base`` / ``o200k_base`` into a tiktoken cache directory.

    ``cache_dir`` defaults to the directory tiktoken reads (``TIKTOKEN_CACHE_DIR``, then
    ``DATA_GYM_CACHE_DIR``, then ``$TMP/data-gym-cache``).  Files already present and valid
    are left alone; writes are atomic (temp file + rename).  Returns the directory when both
    encodings are in place, ``None`` when they cannot be (no bpe-openai, unwritable directory,
    caching disabled).  It does not change ``TIKTOKEN_CACHE_DIR``: point tiktoken at a custom
    directory yourself.
    """
    target = cache_dir if cache_dir is not None else tiktoken_cache_dir()
    if not target:
        return None
    try:
        os.makedirs(target, exist_ok=True)
        for encoding in ENCODING_SHA256:
            path = os.path.join(target, cache_key(encoding))
            if _cached_file_ok(path, encoding):
                continue
            data = _bundled_encoding_bytes(encoding)
            if data is None:
                return None
            tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
    except OSError:
        return None
    return target


class _Encodings:
    """Loads each encoding at most once, thread-safely, and only from a verified local file."""

    def __init__(self) -> None:
        self._lock = new_lock()
        self._loaded: dict[str, _Encoder | None] = {}
        self._warned = False

    def get(self, encoding: str) -> _Encoder | None:
        try:
            return self._loaded[encoding]
        except KeyError:
            pass
        with self._lock:
            if encoding not in self._loaded:
                self._loaded[encoding] = self._load(encoding)
            return self._loaded[encoding]

    def reset(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._warned = False

    def _load(self, encoding: str) -> _Encoder | None:
        reason = self._ensure_local_file(encoding)
        if reason is None:
            try:
                import tiktoken

                enc: _Encoder = tiktoken.get_encoding(encoding)
                return enc
            except Exception as exc:  # a broken tiktoken install must not break the host
                from costwatch._core.failopen import errors

                reason = f"tiktoken failed to load it: {exc!r}"
                errors.report("tokens", exc)
        if not self._warned:
            self._warned = True
            logger.warning(
                "costwatch: tiktoken encoding %s unavailable offline (%s); token counts are "
                "estimated at ~%d characters per token (method='heuristic'). "
                "Install bpe-openai, or point TIKTOKEN_CACHE_DIR at a writable directory.",
                encoding,
                reason,
                CHARS_PER_TOKEN,
            )
        return None

    @staticmethod
    def _ensure_local_file(encoding: str) -> str | None:
        """None when tiktoken will find ``encoding`` in its cache, else why it would not."""
        try:
            import tiktoken.registry
        except ImportError:
            return "tiktoken is not installed"
        if encoding in tiktoken.registry.ENCODINGS:
            return None
        cache_dir = tiktoken_cache_dir()
        if cache_dir is None:
            return "TIKTOKEN_CACHE_DIR is empty (caching disabled), so tiktoken would download"
        if _cached_file_ok(os.path.join(cache_dir, cache_key(encoding)), encoding):
            return None
        if seed_tiktoken_cache(cache_dir) is None:
            return f"bpe-openai not available or {cache_dir} not writable"
        return None


_encodings = _Encodings()


def preload_encodings() -> bool:
    """Load both encodings now (e.g. in a start-up thread) instead of on the first estimate.

    True when tiktoken counting is available, False when estimates will use the heuristic.
    """
    return all(_encodings.get(name) is not None for name in ENCODING_SHA256)


def heuristic_tokens(text: str) -> int:
    """~4 characters per token, rounded up; 0 for empty text."""
    return -(-len(text) // CHARS_PER_TOKEN)


def count_tokens(text: str, model: str) -> tuple[int, str]:
    """Tokens in ``text`` for ``model``: ``(count, "tiktoken")`` or ``(count, "heuristic")``.

    Special-token markers in the text are counted as ordinary text.
    """
    encoder = _encodings.get(encoding_name_for(model))
    if encoder is None:
        return heuristic_tokens(text), "heuristic"
    return (len(encoder.encode_ordinary(text)) if text else 0), "tiktoken"


_SKIPPED_KEYS = frozenset(
    {
        "type",
        "image_url",
        "input_audio",
        "source",
        "cache_control",
        "id",
        "tool_call_id",
        "tool_use_id",
        "url",
        "detail",
    }
)


def _strings(value: Any, out: list[str]) -> None:
    """Collect the text of a message value: strings, text parts, tool-call names and arguments
    (not ids, types, URLs or inline base64 media, which are not billed as text)."""
    if isinstance(value, str):
        if not value.startswith("data:"):
            out.append(value)
    elif isinstance(value, Mapping):
        for key, inner in value.items():
            if key not in _SKIPPED_KEYS:
                _strings(inner, out)
    elif isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        for inner in value:
            _strings(inner, out)


def count_message_tokens(
    messages: Sequence[Mapping[str, Any]] | str, model: str
) -> tuple[int, str]:
    """Prompt tokens of a chat request, including per-message framing (OpenAI cookbook).

    Each message costs ``TOKENS_PER_MESSAGE`` plus the tokens of its role and text content
    (text parts of multi-part content, tool-call names and arguments; images and audio are not
    estimated), ``TOKENS_PER_NAME`` more with a ``name``; the reply priming adds
    ``REPLY_PRIMING_TOKENS``.  A plain string is counted as text, without framing.
    """
    if isinstance(messages, str):
        return count_tokens(messages, model)
    encoder = _encodings.get(encoding_name_for(model))
    total = REPLY_PRIMING_TOKENS
    for message in messages:
        total += TOKENS_PER_MESSAGE
        if not isinstance(message, Mapping):
            continue
        parts: list[str] = []
        for key, value in message.items():
            if key == "name":
                total += TOKENS_PER_NAME
            if key not in _SKIPPED_KEYS:
                _strings(value, parts)
        for part in parts:
            total += (
                heuristic_tokens(part) if encoder is None else len(encoder.encode_ordinary(part))
            )
    return total, "heuristic" if encoder is None else "tiktoken"


def count_prompt_tokens(prompt: object, model: str) -> int:
    """Tokens of a prompt in any shape a call takes it: text; a list of texts (a batch of
    embedding inputs, counted as one text); pre-tokenised input (a list of token ids, or a
    batch of such lists); chat messages (with their framing).  0 for None or any other shape.

    The one prompt counter: budget reservations, estimated usage and ``instrument()`` all count
    with it, so a prompt shape counts the same on every path.
    """
    if isinstance(prompt, str):
        return count_tokens(prompt, model)[0]
    if not isinstance(prompt, Sequence) or not prompt:
        return 0
    if all(isinstance(part, str) for part in prompt):
        return count_tokens("\n".join(prompt), model)[0]
    if all(isinstance(part, int) for part in prompt):
        return len(prompt)
    if all(isinstance(part, Sequence) and not isinstance(part, str | Mapping) for part in prompt):
        if all(isinstance(token, int) for part in prompt for token in part):
            return sum(len(part) for part in prompt)
        return 0
    if all(isinstance(part, Mapping) for part in prompt):
        return count_message_tokens(prompt, model)[0]
    return 0


_OPENAI_NATIVE = re.compile(r"^(?:ft:)?(?:gpt-|chatgpt-|o\d|text-embedding-|davinci|babbage)")


def encoding_is_native(model: str) -> bool:
    """True when the tiktoken encoding *is* the model's tokenizer (OpenAI models)."""
    name = model.strip().lower()
    if "/" in name:
        name = name.rsplit("/", 1)[1]
    return bool(_OPENAI_NATIVE.match(name))
