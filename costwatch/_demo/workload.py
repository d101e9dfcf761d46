"""The demo's workload: a RAG assistant, a fine-tuned classifier, a hybrid drafter, a summariser.

Everything goes through the public API a user would call: ``instrument`` on real SDK clients
(when installed), ``@retrieval`` with a ``RetrievalCache``, ``request`` and ``tags``.
"""

from __future__ import annotations

import hashlib
import random
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import costwatch
from costwatch._demo.fake_api import FakeProviders, mock_transport, sdk_httpx

RAG_MODEL = "gpt-4o-mini"
REASONING_MODEL = "o4-mini"
EMBED_MODEL = "text-embedding-3-small"
FT_CLASSIFIER = "ft:gpt-4o-mini-2024-07-18:acme::x1"
FT_DRAFTER = "ft:gpt-4o-2024-08-06:acme::draft-v2"
SUMMARY_MODEL = "claude-sonnet-4-6"
VECTOR_QUERY_USD = Decimal("0.000004")
"""A managed vector store's price per query (order of magnitude of serverless offerings)."""
SUCCESS_RATES = {
    "answer_question": 0.86,
    "classify_ticket": 0.95,
    "draft_reply": 0.90,
    "summarize_thread": 0.97,
}
"""Simulated share of requests that end well, by pipeline (so by strategy: RAG, fine-tuned,
hybrid, base): the fine-tuned classifier is more accurate on its narrow task than RAG is on
open questions."""
LATE_OUTCOMES = 0.3
"""Share of outcomes that arrive later, as feedback, by request id."""
CLASSIFIER_JOB = {
    "id": "ftjob-demo-classifier",
    "object": "fine_tuning.job",
    "model": "gpt-4o-mini-2024-07-18",
    "fine_tuned_model": FT_CLASSIFIER,
    "status": "succeeded",
    "trained_tokens": 1_800_000,
    "hyperparameters": {"n_epochs": 3},
}
"""A finished OpenAI fine-tuning job, as the SDK returns it: 600k training tokens x 3 epochs."""

_TOPICS = ("refunds", "passwords", "invoices", "shipping", "sso", "api keys", "exports", "seats")
_QUESTIONS = [
    f"How do I handle {t} for {who}?"
    for t in _TOPICS
    for who in ("a new customer", "an enterprise account", "a trial user", "my team")
]
_TENANTS = ("acme", "globex", "initech", "umbrella", "hooli")
_SYSTEM = (
    "You are the support assistant of Example Corp. Answer only from the context. "
    "Cite the document titles you used. "
) * 40


class _Docs:
    """A tiny knowledge base: deterministic top-k per query."""

    def __init__(self, seed: int) -> None:
        rng = random.Random(seed)
        words = (
            "policy account billing refund invoice password shipping enterprise admin "
            "token export seat license renewal contract support region data"
        ).split()
        self.docs = [
            {
                "id": f"kb-{i}",
                "title": f"Article {i}",
                "text": " ".join(rng.choice(words) for _ in range(rng.randint(120, 380))),
            }
            for i in range(48)
        ]

    def top_k(self, vector: list[float], query: str, k: int) -> list[dict[str, str]]:
        digest = int(hashlib.sha256(query.encode()).hexdigest(), 16)
        return [self.docs[(digest >> (6 * i)) % len(self.docs)] for i in range(k)]


class Workload:
    def __init__(self, seed: int = 7, *, latency_s: tuple[float, float] = (0.0005, 0.003)) -> None:
        self.rng = random.Random(seed)
        self.fake = FakeProviders(seed, latency_s)
        self.docs = _Docs(seed)
        self.sdk_objects = False
        self._openai, self._anthropic = self._clients()
        # A bound method: named explicitly, so every process of one seed shares its entries.
        self.cache = costwatch.RetrievalCache(ttl=600, key_namespace=f"demo-kb-seed-{seed}")
        self.search = costwatch.retrieval(
            source="kb", cache=self.cache, price_usd=VECTOR_QUERY_USD
        )(self._search)
        self.outcome_rng = random.Random(seed + 1)
        """Outcomes draw from their own stream: the calls are those of the same seed without."""
        self._late: list[tuple[str, str]] = []
        self._declared = False

    # -- clients -------------------------------------------------------------------------------
    def _clients(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        try:
            import anthropic
            import openai
        except ImportError:
            return self._dict_clients()
        httpx = sdk_httpx()
        transport = mock_transport(self.fake, httpx)
        oa = costwatch.instrument(
            openai.OpenAI(
                api_key="demo", max_retries=0, http_client=httpx.Client(transport=transport)
            )
        )
        an = costwatch.instrument(
            anthropic.Anthropic(
                api_key="demo", max_retries=0, http_client=httpx.Client(transport=transport)
            )
        )
        self.sdk_objects = True

        def openai_call(kind: str, **body: Any) -> Any:
            if kind == "embeddings":
                return oa.embeddings.create(**body)
            return oa.chat.completions.create(**body)

        return openai_call, an.messages.create

    def _dict_clients(self) -> tuple[Callable[..., Any], Callable[..., Any]]:
        """Without the SDKs: the same JSON bodies, recorded through the decorators."""
        fake = self.fake

        @costwatch.embedding(provider="openai")
        def embeddings(**body: Any) -> dict[str, Any]:
            return fake.embeddings(body)

        @costwatch.generation(provider="openai")
        def chat(**body: Any) -> dict[str, Any]:
            return fake.chat_completion(body)

        @costwatch.generation(provider="anthropic")
        def messages(**body: Any) -> dict[str, Any]:
            return fake.message(body)

        def openai_call(kind: str, **body: Any) -> Any:
            return embeddings(**body) if kind == "embeddings" else chat(**body)

        return openai_call, messages

    # -- lifecycle costs and outcomes ----------------------------------------------------------
    def declare_lifecycle(self) -> None:
        """What the pipelines cost beside their calls: the classifier's and the drafter's
        training runs, the classifier's hosting, the knowledge base's vector store and an
        indexing run that embeds the whole knowledge base.  Once per workload."""
        if self._declared:
            return
        self._declared = True
        with costwatch.tags(feature="triage", team="support"):
            costwatch.record_training(job=CLASSIFIER_JOB, pipeline="classify_ticket")
            costwatch.fixed_cost(
                "ft-classifier-hosting",
                usd_per_hour="1.70",
                strategy="fine_tuned",
                pipeline="classify_ticket",
            )
        with costwatch.tags(feature="drafting", team="success"):
            costwatch.record_training(
                model="gpt-4o-2024-08-06",
                training_tokens=400_000,
                epochs=2,
                name=FT_DRAFTER,
                strategy="hybrid",
                pipeline="draft_reply",
            )
        with costwatch.tags(feature="faq", team="support"):
            costwatch.fixed_cost(
                "kb-vector-store",
                usd_per_month=50,
                kind="vector_store",
                strategy="rag",
                pipeline="answer_question",
            )
            with costwatch.indexing("answer_question", knowledge_base="kb"):
                for start in range(0, len(self.docs.docs), 16):
                    batch = [d["text"] for d in self.docs.docs[start : start + 16]]
                    self._openai("embeddings", model=EMBED_MODEL, input=batch, dimensions=16)

    def _settle(self, req: Any, pipeline: str) -> None:
        """How the request ended: said now, or later by its id (feedback)."""
        ok = self.outcome_rng.random() < SUCCESS_RATES[pipeline]
        value = "success" if ok else "failure"
        if self.outcome_rng.random() < LATE_OUTCOMES:
            self._late.append((req.request_id, value))
        else:
            req.outcome(value)

    def flush_outcomes(self) -> None:
        """The feedback that was waiting arrives."""
        late, self._late = self._late, []
        for request_id, value in late:
            costwatch.outcome(request_id, value)

    # -- pipeline steps ------------------------------------------------------------------------
    def _search(self, query: str, k: int = 4) -> list[dict[str, str]]:
        response = self._openai("embeddings", model=EMBED_MODEL, input=query, dimensions=16)
        vector = (
            response["data"][0]["embedding"]
            if isinstance(response, dict)
            else list(response.data[0].embedding)
        )
        return self.docs.top_k(vector, query, k)

    def _question(self) -> str:
        # Zipf-like: a few questions are asked far more often than the rest.
        index = min(int(self.rng.paretovariate(1.1)) - 1, len(_QUESTIONS) - 1)
        return _QUESTIONS[index]

    def answer_question(self) -> None:
        question = self._question()
        model = REASONING_MODEL if self.rng.random() < 0.1 else RAG_MODEL
        with costwatch.request("answer_question", strategy="rag") as req:
            docs = self.search(question)
            context = "\n\n".join(f"## {d['title']}\n{d['text']}" for d in docs)
            self._openai(
                "chat",
                model=model,
                max_tokens=400,
                messages=[
                    {"role": "system", "content": _SYSTEM},
                    {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
                ],
            )
            self._settle(req, "answer_question")

    def classify_ticket(self) -> None:
        with costwatch.request("classify_ticket") as req:
            self._openai(
                "chat",
                model=FT_CLASSIFIER,
                max_tokens=20,
                messages=[
                    {"role": "user", "content": self.fake._text(self.rng.randint(60, 240))},
                ],
            )
            self._settle(req, "classify_ticket")

    def draft_reply(self) -> None:
        question = self._question()
        with costwatch.request("draft_reply", strategy="hybrid") as req:
            docs = self.search(question, k=2)
            context = "\n\n".join(d["text"] for d in docs)
            self._openai(
                "chat",
                model=FT_DRAFTER,
                max_tokens=500,
                messages=[
                    {
                        "role": "user",
                        "content": f"Context:\n{context}\n\nDraft a reply to: {question}",
                    },
                ],
            )
            self._settle(req, "draft_reply")

    def summarize_thread(self) -> None:
        with costwatch.request("summarize_thread", strategy="base") as req:
            self._anthropic(
                model=SUMMARY_MODEL,
                max_tokens=300,
                system=_SYSTEM,
                messages=[
                    {"role": "user", "content": self.fake._text(self.rng.randint(200, 900))},
                ],
            )
            self._settle(req, "summarize_thread")

    # -- driving -------------------------------------------------------------------------------
    _MIX: tuple[tuple[str, str, str, float], ...] = (
        ("answer_question", "faq", "support", 0.55),
        ("classify_ticket", "triage", "support", 0.25),
        ("draft_reply", "drafting", "success", 0.10),
        ("summarize_thread", "summaries", "success", 0.10),
    )

    def one(self) -> str:
        roll = self.rng.random()
        for name, feature, team, weight in self._MIX:  # noqa: B007 - used after the loop
            if roll < weight:
                break
            roll -= weight
        tenant = self.rng.choice(_TENANTS)
        with costwatch.tags(feature=feature, team=team, tenant=tenant):
            getattr(self, name)()
        if len(self._late) >= 8:
            self.flush_outcomes()
        return name

    def run(self, requests: int, progress: Callable[[int, int], None] | None = None) -> None:
        self.declare_lifecycle()
        for done in range(1, requests + 1):
            self.one()
            if progress is not None:
                progress(done, requests)
        self.flush_outcomes()

    def run_for(
        self,
        duration_s: float,
        stop: threading.Event,
        rate_per_s: float = 20.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Keep the workload running (``duration_s`` 0 = until ``stop`` is set)."""
        self.declare_lifecycle()
        started = time.monotonic()
        done = 0
        while not stop.is_set():
            if duration_s and time.monotonic() - started >= duration_s:
                break
            self.one()
            done += 1
            if progress is not None:
                progress(done, 0)
            stop.wait(self.rng.expovariate(rate_per_s))
        self.flush_outcomes()
        return done
