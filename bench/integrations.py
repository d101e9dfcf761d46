"""Per-call overhead of each framework integration beside the bare framework call.

Each framework's real OpenAI SDK client gets a prebuilt chat completion from an in-process
``httpx.MockTransport`` (no network, no server), so what is timed is the framework, the SDK's
parsing and costwatch.  For each of LangChain (``ChatOpenAI.invoke``), LlamaIndex
(``OpenAI.chat``) and LiteLLM (``litellm.completion``), the median per-call time of: the bare
call, the call with a handler that does nothing (what the framework's own callback machinery
costs), with costwatch's integration (callback handler / event handler / logger), and with
``costwatch.instrument()`` on as well (the SDK layer then records the call and the
integration leaves it alone).  Rounds are interleaved so that machine noise hits all variants
alike; medians, never a single run.  LiteLLM reports a call's end on its own logging threads:
that work is off the caller's path and not in its figure.

Then costwatch's callbacks alone, replayed without the framework: its own work per call,
which machine noise on the framework's hundreds of microseconds cannot hide.

    python bench/integrations.py [--calls 200] [--rounds 7] [--cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch at import

import httpx
from _shared import RESPONSE

import costwatch

BODY = RESPONSE.model_dump_json().encode()  # gpt-4o-mini: 1200 prompt (1024 cached), 300 out
BASE_URL = "http://127.0.0.1:9/v1"  # never reached: the transport answers
MESSAGES = [{"role": "user", "content": "What is the refund policy?"}]


def _answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=BODY, headers={"content-type": "application/json"})


def _http() -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(_answer))


def langchain_calls() -> dict[str, Callable[[], Any]]:
    from langchain_core.callbacks import BaseCallbackHandler
    from langchain_openai import ChatOpenAI

    from costwatch.integrations.langchain import CostwatchCallbackHandler

    class NoOp(BaseCallbackHandler):  # type: ignore[misc]
        run_inline = True

    llm = ChatOpenAI(
        model="gpt-4o-mini", base_url=BASE_URL, api_key="x", http_client=_http(), max_retries=0
    )
    config = {"callbacks": [CostwatchCallbackHandler()]}
    noop = {"callbacks": [NoOp()]}
    return {
        "bare": lambda: llm.invoke("What is the refund policy?"),
        "noop": lambda: llm.invoke("What is the refund policy?", config=noop),
        "handler": lambda: llm.invoke("What is the refund policy?", config=config),
    }


def llamaindex_calls() -> dict[str, Callable[[], Any]]:
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.instrumentation.event_handlers import BaseEventHandler
    from llama_index.core.llms import ChatMessage
    from llama_index.llms.openai import OpenAI

    from costwatch.integrations.llamaindex import CostwatchEventHandler

    class NoOp(BaseEventHandler):  # type: ignore[misc]
        def handle(self, event: Any, **kwargs: Any) -> None:
            return None

    llm = OpenAI(model="gpt-4o-mini", api_base=BASE_URL, api_key="x", http_client=_http())
    messages = [ChatMessage(role="user", content="What is the refund policy?")]
    dispatcher = get_dispatcher()

    def with_handler(handler: Any) -> Callable[[], Any]:
        def call() -> Any:
            dispatcher.event_handlers.append(handler)
            try:
                return llm.chat(messages)
            finally:
                dispatcher.event_handlers.remove(handler)

        return call

    return {
        "bare": lambda: llm.chat(messages),
        "noop": with_handler(NoOp()),
        "handler": with_handler(CostwatchEventHandler()),
    }


def litellm_calls() -> dict[str, Callable[[], Any]]:
    import litellm
    import openai
    from litellm.integrations.custom_logger import CustomLogger

    from costwatch.integrations.litellm import CostwatchLogger

    client = openai.OpenAI(base_url=BASE_URL, api_key="x", http_client=_http(), max_retries=0)

    def call() -> Any:
        return litellm.completion(model="openai/gpt-4o-mini", messages=MESSAGES, client=client)

    def with_logger(logger: Any) -> Callable[[], Any]:
        def logged() -> Any:
            litellm.callbacks = [logger]
            try:
                return call()
            finally:
                litellm.callbacks = []
                litellm.logging_callback_manager.remove_callback_from_all_lists(logger)

        return logged

    return {
        "bare": call,
        "noop": with_logger(CustomLogger()),
        "handler": with_logger(CostwatchLogger()),
    }


def replayed() -> dict[str, Callable[[], Any]]:
    """costwatch's own work per call, apart from the framework: each integration's start and
    end callbacks replayed with what the framework passes them for one chat call.  What the
    framework makes anyway (run ids, events, call kwargs) is made before timing, so that only
    costwatch's work is timed."""
    import itertools
    import uuid

    import litellm
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.outputs import ChatGeneration, LLMResult
    from llama_index.core.base.llms.types import ChatMessage, ChatResponse
    from llama_index.core.instrumentation.events.llm import LLMChatEndEvent, LLMChatStartEvent

    from costwatch.integrations.langchain import CostwatchCallbackHandler
    from costwatch.integrations.litellm import CostwatchLogger
    from costwatch.integrations.llamaindex import CostwatchEventHandler

    lc = CostwatchCallbackHandler()
    usage = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "input_token_details": {"cache_read": 1024},
    }
    result = LLMResult(
        generations=[
            [
                ChatGeneration(
                    message=AIMessage(
                        content="hello",
                        usage_metadata=usage,  # type: ignore[arg-type]
                        response_metadata={"model_name": "gpt-4o-mini-2024-07-18"},
                    )
                )
            ]
        ]
    )
    metadata = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    prompt = [[HumanMessage(content="What is the refund policy?")]]

    run_ids = itertools.cycle([uuid.uuid4() for _ in range(4096)])

    def langchain() -> None:
        run_id = next(run_ids)
        lc.on_chat_model_start({}, prompt, run_id=run_id, metadata=metadata)
        lc.on_llm_end(result, run_id=run_id)

    li = CostwatchEventHandler()
    messages = [ChatMessage(role="user", content="What is the refund policy?")]
    reply = ChatResponse(message=ChatMessage(role="assistant", content="hello"), raw=RESPONSE)
    model_dict = {"model": "gpt-4o-mini", "class_name": "openai_llm"}

    span = "OpenAI.chat-1"
    start = LLMChatStartEvent(
        messages=messages, additional_kwargs={}, model_dict=model_dict, span_id=span
    )
    end = LLMChatEndEvent(messages=messages, response=reply, span_id=span)

    def llamaindex() -> None:
        li.handle(start)
        li.handle(end)

    ll = CostwatchLogger()
    response = litellm.ModelResponse(**RESPONSE.model_dump())
    kwargs = {"model": "gpt-4o-mini", "custom_llm_provider": "openai", "messages": MESSAGES}

    calls = itertools.cycle([{**kwargs, "litellm_call_id": str(uuid.uuid4())} for _ in range(4096)])

    def litellm_() -> None:
        call = next(calls)
        ll.log_pre_api_call("gpt-4o-mini", MESSAGES, call)
        ll.log_success_event(call, response, None, None)

    return {"langchain": langchain, "llamaindex": llamaindex, "litellm": litellm_}


FRAMEWORKS = {
    "langchain": langchain_calls,
    "llamaindex": llamaindex_calls,
    "litellm": litellm_calls,
}


CLOCK: Callable[[], float] = time.perf_counter


def per_call(fn: Callable[[], Any], calls: int) -> float:
    t0 = CLOCK()
    for _ in range(calls):
        fn()
    return (CLOCK() - t0) / calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", choices=sorted(FRAMEWORKS), action="append")
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="time the calling thread's CPU (time.thread_time) instead of the wall clock: "
        "steadier on a shared machine; what other threads do (LiteLLM's logging) is left out",
    )
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.thread_time if args.cpu else time.perf_counter
    costwatch.configure(service="bench", prometheus=False, otel=False, warm_up=True)
    print(
        f"median per call over {args.rounds} interleaved rounds of {args.calls} calls "
        "(prebuilt gpt-4o-mini completion from an in-process transport; "
        f"{'thread CPU time' if args.cpu else 'wall clock'})"
    )
    print(
        f"{'framework':<11} {'bare':>11} {'+ no-op handler':>22} {'+ costwatch handler':>22} "
        f"{'+ instrument() too':>22}   costwatch's share"
    )
    for name in args.only or list(FRAMEWORKS):
        calls = FRAMEWORKS[name]()
        for fn in calls.values():  # warm up: imports, price lookups, tokenizer
            per_call(fn, 20)
        samples: dict[str, list[float]] = {"bare": [], "noop": [], "handler": [], "both": []}
        for _ in range(args.rounds):
            for key in ("bare", "noop", "handler"):
                samples[key].append(per_call(calls[key], args.calls))
            costwatch.instrument()
            try:
                samples["both"].append(per_call(calls["handler"], args.calls))
            finally:
                costwatch.uninstrument()
        med = {k: statistics.median(v) for k, v in samples.items()}
        base = med["bare"]

        def cell(key: str, base: float = base, med: dict[str, float] = med) -> str:
            return f"{med[key] * 1e6:9.1f} us ({(med[key] - base) / base:+6.1%})"

        share = (med["handler"] - med["noop"]) / med["noop"]
        print(
            f"{name:<11} {base * 1e6:8.1f} us {cell('noop'):>22} {cell('handler'):>22} "
            f"{cell('both'):>22}   {share:+6.1%} (handler vs no-op handler)"
        )
    main_replayed(args.calls * 10, args.rounds)


def main_replayed(calls: int, rounds: int) -> None:
    print(f"\ncostwatch's callbacks alone, replayed (median of {rounds} rounds of {calls})")
    for name, fn in replayed().items():
        per_call(fn, 50)
        med = statistics.median(per_call(fn, calls) for _ in range(rounds))
        print(f"{name:<11} {med * 1e6:8.1f} us per call")


if __name__ == "__main__":
    main()
