"""The cached function's sync and async call paths.

Each call: the lookup's first steps (``Site.begin``), the backend read, then on a miss the
in-process single flight, the cross-process lock (or a bounded poll for its holder's value),
the computation inside a cost scope, and the write.  The host's function is always called
outside costwatch's exception handlers, so its own exceptions are never chained to (or
replaced by) costwatch's.

Each ``_async_*`` step is the twin of its ``_sync_*`` step, the same lines but for ``await``;
only the miss differs: a thread reads before joining its flight, a task leads the read too.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ParamSpec, TypeVar, cast

import orjson

from costwatch._core.context import cost_scope
from costwatch._core.failopen import errors
from costwatch._core.record import ZERO
from costwatch.cache._backend import HAVE_ENTRY, LOCKED, BackendError, tracked_entry
from costwatch.cache._flight import Flight
from costwatch.cache._lookup import (
    BROKEN,
    ERROR,
    ERRORED,
    HIT,
    Done,
    Lookup,
    Site,
    last_lookup_var,
)

P = ParamSpec("P")
R = TypeVar("R")

_POLL_FIRST_S = 0.005
_POLL_MAX_S = 0.05


def sync_wrapper(site: Site, fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            step = site.begin(args, kwargs)
            if isinstance(step, Lookup):
                try:
                    generation, entry = _sync_read(step)
                except BackendError as exc:
                    step = site.failed(step, exc)
                else:
                    step.breaker.record_success()
                    step = site.served(step, entry, generation) or step
        except Exception as exc:
            errors.report("cache", exc)
            step = BROKEN
        # From here on the twin of async_wrapper's: the same lines but for ``await``.
        if isinstance(step, Lookup):
            return _sync_miss(step, fn, args, kwargs)
        value, result = step
        if result is HIT:
            return value  # type: ignore[no-any-return]
        value = fn(*args, **kwargs)
        last_lookup_var.set(result)  # again: fn may have run cached calls itself
        return value

    return cached


def _sync_read(lk: Lookup) -> tuple[int, bytes | None]:
    """The namespace generation and the entry: the backend's ``read`` (one ``GETRANGE`` while
    Redis tracks the generation, else one script call), or one ``GETRANGE`` while the
    generation read recently is trusted (``generation_ttl``) and the entry does not claim a
    newer one.  Its asyncio twin :func:`_async_read` differs only by ``await``."""
    res = lk.res
    known = res.trusted(lk.gen_key)
    if known is not None:
        entry = res.backend.read_entry(lk.key, lk.max_bytes)
        if tracked_entry(entry, known):
            return known, entry
    generation, entry = res.backend.read(lk.gen_key, lk.key, lk.max_bytes)
    res.trust(lk.gen_key, generation)
    return generation, entry


async def _async_read(lk: Lookup) -> tuple[int, bytes | None]:
    """Twin of :func:`_sync_read`: the same lines but for ``await`` (the asyncio backend)."""
    res = lk.res
    known = res.trusted(lk.gen_key)
    if known is not None:
        entry = await res.abackend.read_entry(lk.key, lk.max_bytes)
        if tracked_entry(entry, known):
            return known, entry
    generation, entry = await res.abackend.read(lk.gen_key, lk.key, lk.max_bytes)
    res.trust(lk.gen_key, generation)
    return generation, entry


def _sync_miss(
    lk: Lookup, fn: Callable[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> R:
    """A miss: one thread per key leads; the others wait (bounded) for its value."""
    site = lk.site
    flight, leader = site.flights.join_or_lead(lk.key)
    if leader:
        try:
            return _sync_lead(lk, fn, args, kwargs, flight, wait=True)
        finally:
            site.flights.land(lk.key, flight)
    assert flight.event is not None
    arrived = flight.event.wait(site.policy.lock_timeout)
    done = _from_leader(lk, flight) if arrived else None
    if done is None:
        # The leader failed (its exception is its own) or is too slow: compute ourselves,
        # without waiting for a lock again when we already waited our time.
        return _sync_lead(lk, fn, args, kwargs, None, wait=arrived)
    if done[1] is HIT:
        return cast(R, done[0])
    return _sync_call_through(fn, args, kwargs)


def _from_leader(lk: Lookup, flight: Flight) -> Done | None:
    """What a waiter takes from the leader it waited for (thread or task): ``ERRORED`` to
    call through when the backend failed the leader, ``(value, HIT)`` for the value the leader
    shared (decoded again: a copy of its own for each waiter), or None to compute itself (the
    leader's function raised, or what it shared cannot be read)."""
    if flight.through:
        lk.site.emit(lk.res, lk.tags, ERROR, ZERO)
        return ERRORED
    if flight.shared is not None:
        body, cost = flight.shared
        try:
            value = orjson.loads(body)
            lk.site.emit(lk.res, lk.tags, HIT, cost)
        except Exception as exc:
            errors.report("cache", exc)
        else:
            return value, HIT
    return None


def _sync_call_through(fn: Callable[..., R], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> R:
    """The cache could not serve the call (already counted as an error): call the function,
    outside costwatch's exception handlers.  Its asyncio twin :func:`_async_call_through`
    differs only by ``await``."""
    value = fn(*args, **kwargs)
    last_lookup_var.set(ERROR)
    return value


def _sync_lead(
    lk: Lookup,
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flight: Flight | None,
    *,
    wait: bool,
) -> R:
    """Compute the key for this process: take the cross-process lock or wait for its holder.

    The lock is taken only by the acquire script, which re-reads the entry in the same atomic
    step: another process may have stored it (and released its lock) since this one read it
    missing, and then it is a hit, not a second computation.  Its asyncio twin
    :func:`_async_lead` differs only by ``await`` (on the asyncio backend and sleep).
    """
    site, res = lk.site, lk.res
    token = os.urandom(12).hex()
    locked = failed = False
    try:
        deadline = time.monotonic() + (site.policy.lock_timeout if wait else 0.0)
        poll = _POLL_FIRST_S
        while not locked:
            status, generation, entry = res.backend.acquire(
                lk.gen_key, lk.key, lk.lock_key, token, site.policy.lock_ms, lk.max_bytes
            )
            if status == HAVE_ENTRY:
                done = site.served(lk, entry, generation, flight)
                if done is not None:
                    return cast(R, done[0])
                break  # garbage behind a plausible prefix: compute and overwrite it
            lk.generation = generation
            res.trust(lk.gen_key, generation)
            if status == LOCKED:
                locked = True
                break
            if time.monotonic() + poll > deadline:
                break
            time.sleep(poll)
            poll = min(poll * 2, _POLL_MAX_S)
    except BackendError as exc:
        _lead_failed(lk, flight, exc)
        failed = True
    except Exception as exc:
        errors.report("cache", exc)
        failed = True
    if failed:
        return _sync_call_through(fn, args, kwargs)
    return _sync_compute(lk, fn, args, kwargs, flight, locked=locked, token=token)


def _lead_failed(lk: Lookup, flight: Flight | None, exc: BackendError) -> None:
    """The backend failed the leader of a miss: count it, and its waiters call through too."""
    lk.site.failed(lk, exc)
    if flight is not None:
        flight.through = True


def _sync_compute(
    lk: Lookup,
    fn: Callable[..., R],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flight: Flight | None,
    *,
    locked: bool,
    token: str,
) -> R:
    """Run the function inside a cost scope and store its value with what it cost.  Its
    asyncio twin :func:`_async_compute` differs only by ``await``."""
    site, res = lk.site, lk.res
    try:
        with cost_scope() as scope:
            value = fn(*args, **kwargs)
    except BaseException:
        if locked:
            _sync_release(lk, token)
        raise
    try:
        stored = site.computed(lk, value, scope.cost_usd, flight)
        if locked:
            res.backend.write_release(lk.key, stored.entry, stored.ttl_ms, lk.lock_key, token)
        elif stored.entry is not None:
            res.backend.write(lk.key, stored.entry, stored.ttl_ms)
        site.finish_miss(lk, stored)
    except BackendError as exc:
        site.failed(lk, exc)
    except Exception as exc:
        errors.report("cache", exc)
    return value


def _sync_release(lk: Lookup, token: str) -> None:
    """The function raised: free the lock at once so other processes need not wait it out.
    Its asyncio twin :func:`_async_release` differs only by ``await``."""
    try:
        lk.res.backend.write_release(lk.key, None, 1, lk.lock_key, token)
    except BackendError as exc:
        lk.res.backend_down(exc, lk.breaker)
    except Exception as exc:
        errors.report("cache", exc)


def async_wrapper(site: Site, fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    @functools.wraps(fn)
    async def cached(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            step = site.begin(args, kwargs)
        except Exception as exc:
            errors.report("cache", exc)
            step = BROKEN
        # The twin of sync_wrapper's last lines: the same but for ``await``.
        if isinstance(step, Lookup):
            return await _async_miss(step, fn, args, kwargs)
        value, result = step
        if result is HIT:
            return value  # type: ignore[no-any-return]
        value = await fn(*args, **kwargs)
        last_lookup_var.set(result)
        return value

    return cached


async def _async_miss(
    lk: Lookup, fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> R:
    """One task per key and event loop goes to Redis (even for the read: 200 tasks on one key
    make one round trip, not 200); the others wait for what it found or computed."""
    site = lk.site
    future, flight = site.flights.ajoin_or_lead(lk.key)
    if future is None:
        try:
            return await _async_read_and_lead(lk, fn, args, kwargs, flight)
        finally:
            site.flights.aland(lk.key, flight)
    try:
        shared_flight: Flight | None = await asyncio.wait_for(
            asyncio.shield(future), site.policy.lock_timeout
        )
    except TimeoutError:
        shared_flight = None
    done = _from_leader(lk, shared_flight) if shared_flight is not None else None
    if done is None:
        return await _async_lead(lk, fn, args, kwargs, None, wait=shared_flight is not None)
    if done[1] is HIT:
        return cast(R, done[0])
    return await _async_call_through(fn, args, kwargs)


async def _async_call_through(
    fn: Callable[..., Awaitable[R]], args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> R:
    """Twin of :func:`_sync_call_through`: the same lines but for ``await``."""
    value = await fn(*args, **kwargs)
    last_lookup_var.set(ERROR)
    return value


async def _async_read_and_lead(
    lk: Lookup,
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flight: Flight,
) -> R:
    """The leading task makes the read (the sync path reads before its flight); on a miss it
    leads like a thread does."""
    try:
        generation, entry = await _async_read(lk)
        lk.breaker.record_success()
        done = lk.site.served(lk, entry, generation, flight)
    except BackendError as exc:
        _lead_failed(lk, flight, exc)
    except Exception as exc:
        errors.report("cache", exc)
    else:
        if done is not None:
            return cast(R, done[0])
        return await _async_lead(lk, fn, args, kwargs, flight, wait=True)
    return await _async_call_through(fn, args, kwargs)


async def _async_lead(
    lk: Lookup,
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flight: Flight | None,
    *,
    wait: bool,
) -> R:
    """Twin of :func:`_sync_lead`: the same lines but for ``await`` (and asyncio's sleep)."""
    site, res = lk.site, lk.res
    token = os.urandom(12).hex()
    locked = failed = False
    try:
        deadline = time.monotonic() + (site.policy.lock_timeout if wait else 0.0)
        poll = _POLL_FIRST_S
        while not locked:
            status, generation, entry = await res.abackend.acquire(
                lk.gen_key, lk.key, lk.lock_key, token, site.policy.lock_ms, lk.max_bytes
            )
            if status == HAVE_ENTRY:
                done = site.served(lk, entry, generation, flight)
                if done is not None:
                    return cast(R, done[0])
                break  # garbage behind a plausible prefix: compute and overwrite it
            lk.generation = generation
            res.trust(lk.gen_key, generation)
            if status == LOCKED:
                locked = True
                break
            if time.monotonic() + poll > deadline:
                break
            await asyncio.sleep(poll)
            poll = min(poll * 2, _POLL_MAX_S)
    except BackendError as exc:
        _lead_failed(lk, flight, exc)
        failed = True
    except Exception as exc:
        errors.report("cache", exc)
        failed = True
    if failed:
        return await _async_call_through(fn, args, kwargs)
    return await _async_compute(lk, fn, args, kwargs, flight, locked=locked, token=token)


async def _async_compute(
    lk: Lookup,
    fn: Callable[..., Awaitable[R]],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    flight: Flight | None,
    *,
    locked: bool,
    token: str,
) -> R:
    """Twin of :func:`_sync_compute`: the same lines but for ``await``."""
    site, res = lk.site, lk.res
    try:
        with cost_scope() as scope:
            value = await fn(*args, **kwargs)
    except BaseException:
        if locked:
            await _async_release(lk, token)
        raise
    try:
        stored = site.computed(lk, value, scope.cost_usd, flight)
        if locked:
            await res.abackend.write_release(
                lk.key, stored.entry, stored.ttl_ms, lk.lock_key, token
            )
        elif stored.entry is not None:
            await res.abackend.write(lk.key, stored.entry, stored.ttl_ms)
        site.finish_miss(lk, stored)
    except BackendError as exc:
        site.failed(lk, exc)
    except Exception as exc:
        errors.report("cache", exc)
    return value


async def _async_release(lk: Lookup, token: str) -> None:
    """Twin of :func:`_sync_release`: the same lines but for ``await``."""
    try:
        await lk.res.abackend.write_release(lk.key, None, 1, lk.lock_key, token)
    except BackendError as exc:
        lk.res.backend_down(exc, lk.breaker)
    except Exception as exc:
        errors.report("cache", exc)
