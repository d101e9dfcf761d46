"""record_batch_results(): what a finished OpenAI or Anthropic batch cost, at the batch rate.

The lines are shaped as the providers document them (OpenAI's batch output file, Anthropic's
results, also as the Anthropic SDK's objects).  Costs by hand from the published per-million
prices, halved: gpt-4o-mini $0.15 input / $0.075 cached / $0.60 output, text-embedding-3-small
$0.02, claude-3-5-haiku $0.80 input / $0.08 cache read / $4 output.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import anthropic.types.messages as batch_types

from costwatch._core.record import TokenUsage
from tests._fixtures.capture import CaptureSink

M = Decimal(1_000_000)

OPENAI_OUTPUT = [
    {
        "id": "batch_req_1",
        "custom_id": "ticket-1",
        "error": None,
        "response": {
            "status_code": 200,
            "request_id": "req_1",
            "body": {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1_700_000_000,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": "refund"},
                    }
                ],
                "usage": {
                    "prompt_tokens": 1200,
                    "completion_tokens": 300,
                    "total_tokens": 1500,
                    "prompt_tokens_details": {"cached_tokens": 1024},
                    "completion_tokens_details": {"reasoning_tokens": 0},
                },
            },
        },
    },
    {
        "id": "batch_req_2",
        "custom_id": "doc-7",
        "error": None,
        "response": {
            "status_code": 200,
            "request_id": "req_2",
            "body": {
                "object": "list",
                "model": "text-embedding-3-small",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]}],
                "usage": {"prompt_tokens": 5000, "total_tokens": 5000},
            },
        },
    },
    {
        "id": "batch_req_3",
        "custom_id": "ticket-2",
        "response": None,
        "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired.",
        },
    },
]
CHAT_COST = (176 * Decimal("0.15") + 1024 * Decimal("0.075") + 300 * Decimal("0.60")) / M / 2
EMBED_COST = 5000 * Decimal("0.02") / M / 2

ANTHROPIC_RESULTS = [
    {
        "custom_id": "summary-1",
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-3-5-haiku-20241022",
                "content": [{"type": "text", "text": "Summary."}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 1000,
                    "output_tokens": 200,
                    "cache_read_input_tokens": 4000,
                    "cache_creation_input_tokens": 0,
                    "service_tier": "batch",
                },
            },
        },
    },
    {
        "custom_id": "summary-2",
        "result": {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "bad"},
            },
        },
    },
]
HAIKU_COST = (1000 * Decimal("0.80") + 4000 * Decimal("0.08") + 200 * Decimal(4)) / M / 2


def test_an_openai_output_file_is_priced_at_the_batch_rate(cw: Any, capture: CaptureSink) -> None:
    jsonl = "\n".join(json.dumps(line) for line in OPENAI_OUTPUT) + "\n"

    with cw.tags(feature="triage"):
        records = cw.record_batch_results(jsonl.splitlines())

    assert [(r.stage, r.status, r.cost_usd, r.batch) for r in records] == [
        ("generation", "ok", CHAT_COST, True),
        ("embedding", "ok", EMBED_COST, True),
        ("generation", "error", Decimal(0), True),
    ]
    assert records[0].usage == TokenUsage(input=176, cache_read=1024, output=300)
    assert records[2].error_type == "batch_expired"
    assert cw.summary().by_feature["triage"].cost_usd == CHAT_COST + EMBED_COST
    assert cw.summary().total.unpriced == 0  # a failed request costs $0, known
    assert capture.records == records


def test_anthropic_results_are_priced_from_dicts_and_from_sdk_objects(
    cw: Any, capture: CaptureSink
) -> None:
    sdk_objects = [
        batch_types.MessageBatchIndividualResponse.model_validate(line)
        for line in ANTHROPIC_RESULTS
    ]

    from_dicts = cw.record_batch_results(ANTHROPIC_RESULTS)
    from_sdk = cw.record_batch_results(sdk_objects)

    for records in (from_dicts, from_sdk):
        assert [(r.provider, r.status, r.cost_usd) for r in records] == [
            ("anthropic", "ok", HAIKU_COST),
            ("anthropic", "error", Decimal(0)),
        ]
        assert records[0].usage == TokenUsage(input=1000, cache_read=4000, output=200)
        assert records[1].error_type == "batch_errored"
    assert cw.summary().total_usd == 2 * HAIKU_COST


def test_a_line_that_is_not_a_batch_result_is_reported_and_skipped(cw: Any) -> None:
    import pytest

    with pytest.raises(ValueError):  # strict mode (the suite) raises what it would log
        cw.record_batch_results(["{not json"])
    cw.configure(service="test", strict=False, prometheus=False, warm_up=False)
    assert (
        cw.record_batch_results(["{not json", "", json.dumps(OPENAI_OUTPUT[1])])[0].cost_usd
        == EMBED_COST
    )
