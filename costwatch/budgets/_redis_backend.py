"""Budget state in Redis (standalone or Cluster): ``RedisBudgetBackend`` and its asyncio twin.

Money is integer nano-dollars changed with ``HINCRBY`` and Lua integer math (exact up to 2**53
nano-dollars, ~$9M per window); each reservation or settlement is one ``EVALSHA`` of a script
in ``_scripts`` on the keys of one budget (one hash tag, so one Cluster slot).  Several budgets'
reservations are sent together: one round trip on a standalone Redis, one per node (in
parallel) on a Cluster.  Clients come from ``costwatch._core.redis`` (short timeouts, no
retries); a circuit breaker stops calling a Redis that keeps failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Sequence
from typing import Any

from costwatch._core.breaker import CircuitBreaker
from costwatch._core.forks import new_lock
from costwatch._core.redis import LoopClients, connect, connect_async, is_cluster_client
from costwatch.budgets._backend import (
    BUDGET_INDEX_KEY,
    AsyncBudgetBackend,
    BackendUnavailable,
    BudgetKeys,
    BudgetReading,
    ProcessIds,
    ReserveRequest,
    ReserveResult,
    Settlement,
    SettleResult,
)
from costwatch.budgets._scripts import (
    CLAIM_SHA,
    READ_SHA,
    RESERVE_LUA,
    RESERVE_SHA,
    SCRIPTS,
    SETTLE_SHA,
)
from costwatch.budgets._window import Window

Call = tuple[str, int, tuple[Any, ...]]
"""An ``EVALSHA``: script hash, number of keys, keys and arguments."""


def _errors() -> tuple[type[BaseException], ...]:
    """What an unreachable Redis raises.  redis-py's own cluster errors (no node reachable
    by a topology refresh, a slot no node covers) are ``RedisClusterException``, not
    ``RedisError``: they too must reach ``on_backend_error``, never let a call through
    without a hold."""
    import redis

    return (
        redis.ConnectionError,
        redis.TimeoutError,
        redis.exceptions.ClusterError,
        redis.exceptions.RedisClusterException,
        OSError,
    )


def _reserve_call(req: ReserveRequest, now: Any, new_epoch: str) -> Call:
    kind, size, count = req.window.script_args
    keys = req.keys
    return (
        RESERVE_SHA,
        3,
        (
            keys.spent,
            keys.holds,
            keys.amounts,
            now,
            kind,
            size,
            count,
            req.limit,
            req.amount,
            req.hold_id,
            req.hold_ms,
            1 if req.enforce else 0,
            req.epoch,
            new_epoch,
            1 if req.deny_lost else 0,
        ),
    )


def _reserve_result(reply: Any) -> ReserveResult:
    epoch = reply[6]
    return ReserveResult(
        reply[0] == 1,
        reply[1] == 1,
        reply[2],
        reply[3],
        reply[4],
        reply[5],
        epoch.decode() if isinstance(epoch, bytes) else str(epoch),
        reply[7],
    )


def _settle_call(s: Settlement, now: Any, age_ms: int) -> Call:
    kind, size, count = s.window.script_args
    return (
        SETTLE_SHA,
        4,
        (
            s.keys.spent,
            s.keys.holds,
            s.keys.amounts,
            s.keys.writer_prefix + s.writer,
            now,
            kind,
            size,
            count,
            age_ms,
            s.writer_ttl_s,
            s.cost,
            s.seq,
            *s.hold_ids,
        ),
    )


class RedisBudgetBackend:
    """Budget state in Redis.  ``server_time`` (default): windows and hold expiry follow
    Redis's ``TIME``; ``False`` makes the scripts use the caller's ``now_ms`` (tests that inject
    a clock)."""

    def __init__(
        self,
        client: Any,
        *,
        breaker: CircuitBreaker | None = None,
        server_time: bool = True,
        async_factory: Callable[[], Any] | None = None,
        connect_later: Callable[[], Any] | None = None,
    ) -> None:
        """``client`` None with ``connect_later``: a Redis Cluster client built on first use
        (see :meth:`from_url`)."""
        import redis

        self._client = client
        self._connect_later = connect_later
        self._connect_lock = new_lock()
        self.cluster = connect_later is not None or is_cluster_client(client)
        self.server_time = server_time
        self._breaker = breaker or CircuitBreaker(failure_threshold=3, cooldown_s=1.0)
        self._down = _errors()
        self._noscript: type[BaseException] = redis.exceptions.NoScriptError
        self._response_error: type[BaseException] = redis.exceptions.ResponseError
        self._epochs = ProcessIds()
        self._prefixes: dict[str, bytes] = {}
        self._idle: list[Any] = []
        self._idle_pid = os.getpid()
        self._async_factory = async_factory
        self._async: AsyncRedisBudgetBackend | None = None

    @classmethod
    def from_url(
        cls, url: str, *, timeout_s: float = 0.1, cluster: bool = False, server_time: bool = True
    ) -> RedisBudgetBackend:
        """A client with short socket timeouts and no retries (the breaker handles outages);
        ``redis+cluster://`` or ``cluster=True`` for a Redis Cluster."""

        def connect_now() -> Any:
            return connect(url, timeout_s=timeout_s, cluster=cluster)

        try:
            client, later = connect_now(), None
        except _errors():
            # redis-py's RedisCluster reaches a node while it is built: with none reachable
            # (a cluster down as the host starts) build it on first use, inside the breaker,
            # so on_backend_error applies instead of an exception in the host's start-up.
            client, later = None, connect_now
        return cls(
            client,
            server_time=server_time,
            async_factory=lambda: connect_async(url, timeout_s=timeout_s, cluster=cluster),
            connect_later=later,
        )

    @property
    def client(self) -> Any:
        client = self._client
        if client is None:
            with self._connect_lock:
                if self._client is None:
                    assert self._connect_later is not None
                    self._client = self._connect_later()
                client = self._client
        return client

    def _now(self, now_ms: int) -> Any:
        return "" if self.server_time else now_ms

    def _run(self, call: Callable[[], Any]) -> Any:
        breaker = self._breaker
        if not breaker.allow():
            raise BackendUnavailable("circuit open after repeated Redis failures")
        try:
            result = call()
        except self._down as exc:
            breaker.record_failure()
            raise BackendUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        breaker.record_success()
        return result

    def _evalsha(self, call: Call) -> Any:
        return _replies(self._pipelined([call]))[0]

    def _pipelined(self, calls: Sequence[Call]) -> list[Any]:
        """EVALSHA each call in one round trip (one per node on a Cluster, in parallel);
        reload and rerun only those that met NOSCRIPT (a restarted or flushed Redis).  An
        unreachable Redis raises; other error replies are returned in their place.  The
        asyncio twin is ``AsyncRedisBudgetBackend._pipelined`` (differs only by ``await``)."""
        client, noscript, down = self.client, self._noscript, self._down
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                sha, numkeys, args = calls[i]
                pipe.evalsha(sha, numkeys, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, noscript) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, down):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                break
            for sha in {calls[i][0] for i in missing}:
                client.script_load(SCRIPTS[sha])
            todo = missing
        return results

    # -- the reservation hot path -------------------------------------------------------
    #
    # Reservations run on the host's call path, so on a standalone Redis they skip redis-py's
    # generic command machinery (pool lock, retry wrapper, per-argument encoding) and write
    # the EVALSHA commands as RESP on a connection of their own: the keys and the script hash
    # are encoded once per budget.  Each reservation is still exactly one EVALSHA, several
    # budgets' are sent together (one round trip), and replies are parsed by redis-py's
    # parser.  On a Cluster they go through redis-py's cluster pipeline (it routes by slot).

    def _command_prefix(self, keys: BudgetKeys) -> bytes:
        prefix = self._prefixes.get(keys.name)
        if prefix is None:
            head = [b"EVALSHA", RESERVE_SHA.encode(), b"3", keys.spent.encode(),
                    keys.holds.encode(), keys.amounts.encode()]  # fmt: skip
            prefix = b"*18\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in head)
            self._prefixes[keys.name] = prefix
        return prefix

    def _pack_reserve(self, req: ReserveRequest) -> bytes:
        kind, size, count = req.window.script_args
        args = (
            b"" if self.server_time else b"%d" % req.now_ms,
            kind.encode(),
            b"%d" % size,
            b"%d" % count,
            b"%d" % req.limit,
            b"%d" % req.amount,
            req.hold_id.encode(),
            b"%d" % req.hold_ms,
            b"1" if req.enforce else b"0",
            req.epoch.encode(),
            self._epochs.new().encode(),
            b"1" if req.deny_lost else b"0",
        )
        return self._command_prefix(req.keys) + b"".join(
            b"$%d\r\n%s\r\n" % (len(x), x) for x in args
        )

    def _take_connection(self) -> Any:
        pid = os.getpid()
        if pid != self._idle_pid:  # a forked child never uses its parent's sockets
            self._idle = []
            self._idle_pid = pid
        try:
            return self._idle.pop()
        except IndexError:
            return self._client.connection_pool.make_connection()

    def _roundtrip(self, payload: bytes, count: int) -> list[Any]:
        """Send ``count`` packed commands at once and read their replies (errors as values)."""
        conn = self._take_connection()
        replies: list[Any] = []
        try:
            conn.send_packed_command([payload], check_health=False)
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except self._response_error as exc:  # an error reply: the stream stays in sync
                    replies.append(exc)
        except BaseException:
            conn.disconnect()
            raise
        self._idle.append(conn)
        return replies

    def _reserve_standalone(self, requests: Sequence[ReserveRequest]) -> list[Any]:
        payload = b"".join([self._pack_reserve(req) for req in requests])
        replies = self._roundtrip(payload, len(requests))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, self._noscript)]
        if missing:  # SCRIPT FLUSH or a restarted Redis: load, then run those again
            self._client.script_load(RESERVE_LUA)
            again = b"".join([self._pack_reserve(requests[i]) for i in missing])
            for i, reply in zip(missing, self._roundtrip(again, len(missing)), strict=True):
                replies[i] = reply
        return replies

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        breaker = self._breaker
        if not breaker.allow():
            raise BackendUnavailable("circuit open after repeated Redis failures")
        try:
            if self.cluster:
                calls = [
                    _reserve_call(req, self._now(req.now_ms), self._epochs.new())
                    for req in requests
                ]
                replies = self._pipelined(calls)
            else:
                replies = self._reserve_standalone(requests)
        except self._down as exc:
            breaker.record_failure()
            raise BackendUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        breaker.record_success()
        return [_reserve_result(reply) for reply in _replies(replies)]

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        if not settlements:
            return []
        calls = [
            _settle_call(s, self._now(s.now_ms), s.age_ms if self.server_time else 0)
            for s in settlements
        ]
        replies = _replies(self._run(lambda: self._pipelined(calls)))
        return [SettleResult(x[0], x[1], x[2], x[3] == 1, x[4]) for x in replies]

    def read(self, keys: BudgetKeys, window: Window, now_ms: int) -> BudgetReading:
        kind, size, count = window.script_args
        call: Call = (
            READ_SHA,
            3,
            (keys.spent, keys.holds, keys.amounts, self._now(now_ms), kind, size, count),
        )
        reply = self._run(lambda: self._evalsha(call))
        return BudgetReading(reply[0], reply[1], reply[2], reply[3], reply[4])

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        call: Call = (
            CLAIM_SHA,
            1,
            (keys.alert_prefix + claim, self._now(now_ms), dedupe_ms, ttl_s),
        )
        reply = self._run(lambda: self._evalsha(call))
        return bool(reply == 1)

    def register(self, name: str, definition_json: str) -> None:
        self._run(lambda: self.client.hset(BUDGET_INDEX_KEY, name, definition_json))

    def definitions(self) -> dict[str, str]:
        raw = self._run(lambda: self.client.hgetall(BUDGET_INDEX_KEY))
        return {_text(k): _text(v) for k, v in raw.items()}

    def asyncio(self) -> AsyncBudgetBackend:
        backend = self._async
        if backend is None:
            backend = self._async = AsyncRedisBudgetBackend(self, self._async_factory)
        return backend

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(*self._down):
                conn.disconnect()
        if self._client is not None:
            with contextlib.suppress(*self._down):
                self._client.close()

    def after_fork_in_child(self) -> None:
        self._idle = []
        self._idle_pid = os.getpid()
        if self._async is not None:
            self._async.after_fork_in_child()
        pool = getattr(self._client, "connection_pool", None)
        if pool is not None:
            with contextlib.suppress(Exception):
                pool.reset()  # the parent's sockets stay the parent's


class _LoopConnection:
    """One event loop's client and the reservations waiting for its next round trip."""

    __slots__ = ("client", "waiting", "task")

    def __init__(self, client: Any) -> None:
        self.client = client
        self.waiting: list[tuple[Sequence[ReserveRequest], asyncio.Future[list[Any]]]] = []
        self.task: asyncio.Task[None] | None = None

    async def aclose(self) -> None:
        await self.client.aclose()


class AsyncRedisBudgetBackend:
    """Reservations through ``redis.asyncio``: they never block the event loop, and the
    reservations of calls that start together share round trips.

    A coroutine that reserves joins the loop's waiting list; a sender task sends everything
    waiting as one pipeline, and again for what arrived meanwhile.  So 50 calls started at
    once cost about one round trip, not 50.  Without an asyncio client factory (an injected
    sync client), reservations run on a worker thread instead.
    """

    def __init__(self, sync: RedisBudgetBackend, factory: Callable[[], Any] | None) -> None:
        self._sync = sync
        self._factory = factory
        self._connections: LoopClients[_LoopConnection] | None = None
        if factory is not None:
            self._connections = LoopClients(lambda: _LoopConnection(factory()))

    async def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        connections = self._connections
        if connections is None:
            return await asyncio.to_thread(self._sync.reserve, requests)
        sync = self._sync
        if not sync._breaker.allow():
            raise BackendUnavailable("circuit open after repeated Redis failures")
        conn = connections.get()
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        conn.waiting.append((requests, future))
        if conn.task is None:
            conn.task = asyncio.get_running_loop().create_task(self._send(conn))
        return [_reserve_result(reply) for reply in _replies(await future)]

    async def _send(self, conn: _LoopConnection) -> None:
        sync = self._sync
        try:
            while conn.waiting:
                batch, conn.waiting = conn.waiting, []
                calls = [
                    _reserve_call(req, sync._now(req.now_ms), sync._epochs.new())
                    for requests, _ in batch
                    for req in requests
                ]
                try:
                    replies = await self._pipelined(conn.client, calls)
                except sync._down as exc:
                    sync._breaker.record_failure()
                    error = BackendUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}")
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)
                    continue
                except Exception as exc:
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                sync._breaker.record_success()
                start = 0
                for requests, future in batch:
                    if not future.done():
                        future.set_result(replies[start : start + len(requests)])
                    start += len(requests)
        finally:
            conn.task = None

    async def _pipelined(self, client: Any, calls: Sequence[Call]) -> list[Any]:
        """The asyncio twin of ``RedisBudgetBackend._pipelined`` (differs only by ``await``)."""
        noscript, down = self._sync._noscript, self._sync._down
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = client.pipeline(transaction=False)
            for i in todo:
                sha, numkeys, args = calls[i]
                pipe.evalsha(sha, numkeys, *args)
            replies = await pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, noscript) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, down):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                break
            for sha in {calls[i][0] for i in missing}:
                await client.script_load(SCRIPTS[sha])
            todo = missing
        return results

    def after_fork_in_child(self) -> None:
        if self._connections is not None:
            self._connections.after_fork_in_child()


def _replies(replies: list[Any]) -> list[Any]:
    """``replies``, or the first error reply raised as ``BackendUnavailable``: an error reply
    (a cluster node's ``MOVED``, ``CLUSTERDOWN``, ``OOM``, ``READONLY``...) leaves the budget
    as unknown as an unreachable Redis, so ``on_backend_error`` applies and queued settlements
    are kept for retry."""
    for reply in replies:
        if isinstance(reply, BaseException):
            message = str(reply)
            if type(reply).__name__ in ("MovedError", "AskError"):
                message += (
                    " (this Redis is a node of a Redis Cluster: use a redis+cluster:// URL or "
                    "configure(redis_cluster=True))"
                )
            raise BackendUnavailable(f"Redis error: {type(reply).__name__}: {message}") from reply
    return replies


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
