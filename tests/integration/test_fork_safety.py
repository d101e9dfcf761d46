"""A process forked at any moment keeps working: during ``configure()``'s warm-up, and under load.

Each scenario runs in a fresh interpreter (nothing imported yet, as in a real server), which
forks children with ``multiprocessing``'s fork start method.  Every child must answer within
a timeout: a child that inherited a lock or an import held by a thread it does not have hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

CHILD_TIMEOUT_S = 20.0
"""Generous: a child that answers at all answers in well under a second; one that inherited
a held lock never does."""

FORK_AND_WAIT = r"""
import multiprocessing

def fork_and_wait(child, timeout_s):
    '''Run ``child(queue)`` in a forked process: what it put in the queue, or "hung".'''
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=child, args=(queue,))
    proc.start()
    proc.join(timeout_s)
    if proc.is_alive():
        proc.kill()
        proc.join()
        return "hung"
    return queue.get(timeout=5) if proc.exitcode == 0 else f"exit {proc.exitcode}"
"""
"""Shared by the scenarios: fork a child, wait for its answer within a timeout."""

FORK_DURING_CONFIGURE = (
    FORK_AND_WAIT
    + r"""
import json, sys, time

import costwatch

def child(queue):
    from prometheus_client import CollectorRegistry, generate_latest

    @costwatch.generation(provider="openai", model="gpt-4o-mini")
    def answer(prompt):
        return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}

    with costwatch.tags(tenant="child"):
        answer("hello")
        rec = costwatch.record(provider="anthropic", model="claude-3-5-haiku-latest",
                               input_tokens=10, output_tokens=5)
    from costwatch._core.tokens import count_tokens

    tokens, method = count_tokens("how many tokens is this?", "gpt-4o")
    summary = costwatch.summary()
    queue.put({"calls": summary.total.calls, "priced": rec.cost_usd is not None,
               "tokens": tokens, "method": method})

if __name__ == "__main__":
    delay = float(sys.argv[1])
    costwatch.configure(service="forked", prometheus=False, strict=True)  # warm-up starts
    time.sleep(delay)
    print(json.dumps(fork_and_wait(child, float(sys.argv[2]))))
"""
)


def run_scenario(code: str, *args: str) -> object:
    """Run ``code`` in a fresh interpreter; what it printed last, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("delay_s", [0.0, 0.05, 0.15, 0.4, 1.2])
def test_a_child_forked_during_or_after_the_warm_up_answers(delay_s: float) -> None:
    result = run_scenario(FORK_DURING_CONFIGURE, str(delay_s), str(CHILD_TIMEOUT_S))

    assert result == {"calls": 2, "priced": True, "tokens": 6, "method": "tiktoken"}, (
        f"the child forked {delay_s}s after configure(): {result}"
    )


FORK_UNDER_LOAD = (
    FORK_AND_WAIT
    + r"""
import json, random, sys, threading, time

from prometheus_client import CollectorRegistry, generate_latest

import costwatch

registry = CollectorRegistry()

@costwatch.generation(provider="openai", model="gpt-4o-mini")
def answer(prompt):
    return {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 100, "completion_tokens": 20}}

def child(queue):
    before = costwatch.summary().total.calls
    with costwatch.tags(tenant="child", feature="fork"):
        for _ in range(200):  # enough to fold the tally entry several times
            answer("hello")
    with costwatch.tags(team="budgeted"):
        answer("under a budget")  # reserve and settle through the child's own worker
    flushed = costwatch.runtime().budgets.flush(timeout_s=5)
    scrape = generate_latest(registry).decode()
    queue.put({"calls": costwatch.summary().total.calls - before, "flushed": flushed,
               "scraped": "costwatch_cost_usd_total" in scrape})

def load(stop, seed):
    rng = random.Random(seed)
    while not stop.is_set():
        with costwatch.tags(tenant=f"t{rng.randrange(300)}", feature=f"f{rng.randrange(5)}"):
            answer("load")

def read(stop):
    while not stop.is_set():
        costwatch.summary()
        generate_latest(registry)

if __name__ == "__main__":
    costwatch.configure(service="load", strict=True, registry=registry,
                        redis_url=sys.argv[2], label_limits={"tenant": 50})
    costwatch.budget("fork-budget", limit_usd=1000, window="1d", match={"team": "budgeted"},
                     action="block")
    stop = threading.Event()
    threads = [threading.Thread(target=load, args=(stop, i)) for i in range(3)]
    threads.append(threading.Thread(target=read, args=(stop,)))
    for t in threads:
        t.start()
    outcomes = []
    for i in range(int(sys.argv[1])):
        time.sleep(0.01 * (i % 5))
        outcomes.append(fork_and_wait(child, float(sys.argv[3])))
    stop.set()
    for t in threads:
        t.join()
    print(json.dumps(outcomes))
"""
)


@pytest.mark.timeout(600)  # a dozen forks next to four busy threads
def test_children_forked_while_threads_record_and_read_all_answer(redis_server: str) -> None:
    outcomes = run_scenario(FORK_UNDER_LOAD, "12", redis_server, str(CHILD_TIMEOUT_S / 2))

    assert outcomes == [{"calls": 201, "flushed": True, "scraped": True}] * 12, outcomes
