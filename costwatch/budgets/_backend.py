"""Where budget spend lives: a ``BudgetBackend`` protocol, a thread-safe in-memory twin and Redis.

The data model is the same in both implementations, so the twin is an exact stand-in in tests:

* **spent**: integer nano-dollars per *bucket* (an integer index: the minute or hour of a
  rolling window, the day or month of a calendar window).  The spend of a window is the sum of
  the buckets ``min_bucket <= b <= cur_bucket``; older buckets are pruned lazily.  Two
  bookkeeping fields make the common case O(1): ``t`` (total of the live buckets) and ``m``
  (the oldest live bucket; when it falls behind ``min_bucket`` the hash is rescanned once).
* **holds** (reservations): an amount per reservation id plus an expiry, and their running
  total.  Expired holds are pruned on every reservation, so a process that dies after reserving
  frees the budget once its holds expire.
* **alert claims**: one key per (window id, threshold); claiming it is what makes an alert fire
  once per window across processes.

Every operation takes ``now`` from the caller (the registry's injectable clock), never from
Redis, so window rollover and hold expiry are testable against a real Redis.

In Redis all keys of a budget share the hash tag ``{cw:b:<name>}`` (Redis Cluster-safe), money
is integer nano-dollars changed with ``HINCRBY`` and Lua integer math (exact up to 2**53 nano-
dollars, ~$9M per window), and each reservation or settlement is one ``EVALSHA``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from costwatch._core.breaker import CircuitBreaker

BUDGET_INDEX_KEY = "cw:budgets"
"""Hash ``name -> JSON definition`` of every registered budget (``costwatch budget status``)."""


class BackendUnavailable(Exception):
    """The budget store could not be reached (connection refused, timeout, circuit open)."""


class BudgetKeys:
    """Names of one budget's Redis keys, computed once at registration."""

    __slots__ = ("name", "spent", "holds", "amounts", "alert_prefix", "writer_prefix")

    def __init__(self, name: str) -> None:
        tag = "{cw:b:" + name + "}"
        self.name = name
        self.spent = tag + ":spent"
        self.holds = tag + ":holds"
        self.amounts = tag + ":holdamt"
        self.alert_prefix = tag + ":alert:"
        self.writer_prefix = tag + ":applied:"


@dataclass(slots=True)
class ReserveRequest:
    """Hold ``amount`` nano-dollars against a budget unless that would pass ``limit``."""

    keys: BudgetKeys
    now_ms: int
    cur_bucket: int
    min_bucket: int
    limit: int
    amount: int
    hold_id: str
    hold_expires_ms: int
    hold_ttl_s: int
    enforce: bool
    """``True``: refuse the hold when over the limit (``block``); ``False``: hold and report."""


@dataclass(slots=True)
class ReserveResult:
    granted: bool
    over: bool
    """spent + held + amount > limit (or the budget is already used up)."""
    spent: int
    reserved: int
    """Held by other calls before this one."""
    oldest_bucket: int
    """Oldest bucket with spend, -1 when the window is empty."""


@dataclass(slots=True)
class Settlement:
    """A batch for one budget: release the holds ``hold_ids`` and charge ``cost`` nano-dollars
    (the sum of the batch's actual costs) to ``cur_bucket``.

    Idempotent however late it is retried: a ``writer`` (one process) numbers its batches
    (``seq``, growing) and sends them in that order, retries first, so the store keeps the last
    number it applied per writer and budget, and a batch at or below it (a retry after a timeout
    that left it unknown whether Redis ran it) is applied once.  A writer's number is kept
    ``writer_ttl_s`` seconds after its last batch.
    """

    keys: BudgetKeys
    writer: str
    seq: int
    hold_ids: list[str]
    cost: int
    cur_bucket: int
    min_bucket: int
    spent_ttl_s: int
    writer_ttl_s: int = 86_400


@dataclass(slots=True)
class SettleResult:
    spent: int
    """Window spend after the settlement."""
    reserved: int
    oldest_bucket: int
    duplicate: bool


@dataclass(slots=True)
class BudgetReading:
    spent: int
    reserved: int
    oldest_bucket: int
    holds: int


class BudgetBackend(Protocol):
    """Shared budget state.  Implementations are thread-safe."""

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        """All requests in one round trip; raises ``BackendUnavailable``."""
        ...

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        """Apply in one round trip (idempotent per writer and ``seq``); raises
        ``BackendUnavailable``."""
        ...

    def read(self, keys: BudgetKeys, now_ms: int, min_bucket: int) -> BudgetReading: ...

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        """True exactly once per claim (or once per ``dedupe_ms`` when it is >= 0)."""
        ...

    def register(self, name: str, definition_json: str) -> None: ...

    def definitions(self) -> dict[str, str]: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- in-memory twin


class _MemoryBudget:
    __slots__ = ("buckets", "holds", "held", "applied", "alerts")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.holds: dict[str, tuple[int, int]] = {}
        self.held = 0
        self.applied: dict[str, int] = {}
        """The last batch number applied, by writer."""
        self.alerts: dict[str, int] = {}

    def prune_holds(self, now_ms: int) -> None:
        expired = [hid for hid, (_, exp) in self.holds.items() if exp <= now_ms]
        for hid in expired:
            self.held -= self.holds.pop(hid)[0]

    def window(self, min_bucket: int) -> tuple[int, int]:
        stale = [b for b in self.buckets if b < min_bucket]
        for b in stale:
            del self.buckets[b]
        if not self.buckets:
            return 0, -1
        return sum(self.buckets.values()), min(self.buckets)


class MemoryBudgetBackend:
    """The in-process twin of ``RedisBudgetBackend`` (one process, same semantics)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._budgets: dict[str, _MemoryBudget] = {}
        self._definitions: dict[str, str] = {}

    def _state(self, keys: BudgetKeys) -> _MemoryBudget:
        state = self._budgets.get(keys.name)
        if state is None:
            state = self._budgets[keys.name] = _MemoryBudget()
        return state

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        results = []
        with self._lock:
            for req in requests:
                state = self._state(req.keys)
                state.prune_holds(req.now_ms)
                spent, oldest = state.window(req.min_bucket)
                reserved = state.held
                over = spent + reserved + req.amount > req.limit or spent + reserved >= req.limit
                if over and req.enforce:
                    results.append(ReserveResult(False, True, spent, reserved, oldest))
                    continue
                if req.amount > 0:
                    state.holds[req.hold_id] = (req.amount, req.hold_expires_ms)
                    state.held += req.amount
                results.append(ReserveResult(True, over, spent, reserved, oldest))
        return results

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        results = []
        with self._lock:
            for item in settlements:
                state = self._state(item.keys)
                duplicate = item.seq <= state.applied.get(item.writer, 0)
                if not duplicate:
                    state.applied[item.writer] = item.seq
                    for hold_id in item.hold_ids:
                        hold = state.holds.pop(hold_id, None)
                        if hold is not None:
                            state.held -= hold[0]
                    if item.cost > 0:
                        bucket = item.cur_bucket
                        state.buckets[bucket] = state.buckets.get(bucket, 0) + item.cost
                spent, oldest = state.window(item.min_bucket)
                results.append(SettleResult(spent, state.held, oldest, duplicate))
        return results

    def read(self, keys: BudgetKeys, now_ms: int, min_bucket: int) -> BudgetReading:
        with self._lock:
            state = self._state(keys)
            state.prune_holds(now_ms)
            spent, oldest = state.window(min_bucket)
            return BudgetReading(spent, state.held, oldest, len(state.holds))

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        with self._lock:
            alerts = self._state(keys).alerts
            fired = alerts.get(claim)
            if fired is not None and (dedupe_ms < 0 or now_ms - fired < dedupe_ms):
                return False
            alerts[claim] = now_ms
            return True

    def register(self, name: str, definition_json: str) -> None:
        with self._lock:
            self._definitions[name] = definition_json

    def definitions(self) -> dict[str, str]:
        with self._lock:
            return dict(self._definitions)

    def close(self) -> None:
        return None


# --------------------------------------------------------------------------- Redis

_LUA_WINDOW = """
local function window_spent(key, minb)
  local meta = redis.call('HMGET', key, 't', 'm')
  local oldest = tonumber(meta[2])
  if oldest == nil then return 0, -1 end
  if oldest >= minb then return tonumber(meta[1]) or 0, oldest end
  local all = redis.call('HGETALL', key)
  local total, low, stale = 0, nil, {}
  for i = 1, #all, 2 do
    local f = all[i]
    if f ~= 't' and f ~= 'm' then
      local b = tonumber(f)
      if b < minb then
        stale[#stale + 1] = f
      else
        total = total + tonumber(all[i + 1])
        if low == nil or b < low then low = b end
      end
    end
  end
  for i = 1, #stale, 500 do
    redis.call('HDEL', key, unpack(stale, i, math.min(i + 499, #stale)))
  end
  if low == nil then
    redis.call('DEL', key)
    return 0, -1
  end
  redis.call('HSET', key, 't', string.format('%.0f', total), 'm', string.format('%.0f', low))
  return total, low
end
"""

RESERVE_LUA = (
    _LUA_WINDOW
    + """
-- KEYS: spent hash, holds zset, hold amounts hash
-- ARGV: now_ms, cur, min, limit, amount, hold_id, hold_expires_ms, enforce, hold_ttl
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, 500)
if #expired > 0 then
  local amounts = redis.call('HMGET', KEYS[3], unpack(expired))
  local freed = 0
  for i = 1, #amounts do freed = freed + (tonumber(amounts[i]) or 0) end
  redis.call('HDEL', KEYS[3], unpack(expired))
  redis.call('ZREM', KEYS[2], unpack(expired))
  if freed ~= 0 then
    redis.call('HINCRBY', KEYS[3], '_t', string.format('%.0f', -freed))
  end
end
local spent, oldest = window_spent(KEYS[1], tonumber(ARGV[3]))
local reserved = tonumber(redis.call('HGET', KEYS[3], '_t') or '0')
local limit = tonumber(ARGV[4])
local amount = tonumber(ARGV[5])
local over = 0
if spent + reserved + amount > limit or spent + reserved >= limit then over = 1 end
if over == 1 and ARGV[8] == '1' then
  return {0, 1, spent, reserved, oldest}
end
if amount > 0 then
  redis.call('ZADD', KEYS[2], ARGV[7], ARGV[6])
  redis.call('HSET', KEYS[3], ARGV[6], ARGV[5])
  redis.call('HINCRBY', KEYS[3], '_t', ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
return {1, over, spent, reserved, oldest}
"""
)

SETTLE_LUA = (
    _LUA_WINDOW
    + """
-- KEYS: spent hash, holds zset, hold amounts hash, the writer's last applied batch number
-- ARGV: cur, min, spent_ttl, writer_ttl, cost, batch number, hold ids...
-- A writer sends its batches in the order of their numbers, retries first: a batch numbered
-- at or below the last one applied is a retry of one that did run (after an ambiguous
-- failure), and is applied once.
local dup = 0
if tonumber(ARGV[6]) > tonumber(redis.call('GET', KEYS[4]) or '0') then
  redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[4])
  local freed = 0
  for i = 7, #ARGV, 500 do
    local last = math.min(i + 499, #ARGV)
    local amounts = redis.call('HMGET', KEYS[3], unpack(ARGV, i, last))
    for j = 1, #amounts do freed = freed + (tonumber(amounts[j]) or 0) end
    redis.call('HDEL', KEYS[3], unpack(ARGV, i, last))
    redis.call('ZREM', KEYS[2], unpack(ARGV, i, last))
  end
  if freed ~= 0 then
    redis.call('HINCRBY', KEYS[3], '_t', string.format('%.0f', -freed))
  end
  if tonumber(ARGV[5]) > 0 then
    local m = redis.call('HGET', KEYS[1], 'm')
    redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[5])
    redis.call('HINCRBY', KEYS[1], 't', ARGV[5])
    if (not m) or tonumber(m) > tonumber(ARGV[1]) then
      redis.call('HSET', KEYS[1], 'm', ARGV[1])
    end
    redis.call('EXPIRE', KEYS[1], ARGV[3])
  end
else
  dup = 1
end
local spent, oldest = window_spent(KEYS[1], tonumber(ARGV[2]))
local reserved = tonumber(redis.call('HGET', KEYS[3], '_t') or '0')
return {spent, reserved, oldest, dup}
"""
)

READ_LUA = """
-- read-only: KEYS: spent hash, holds zset, hold amounts hash; ARGV: now_ms, min
local minb = tonumber(ARGV[2])
local all = redis.call('HGETALL', KEYS[1])
local spent, low = 0, -1
for i = 1, #all, 2 do
  local f = all[i]
  if f ~= 't' and f ~= 'm' then
    local b = tonumber(f)
    if b >= minb then
      spent = spent + tonumber(all[i + 1])
      if low < 0 or b < low then low = b end
    end
  end
end
local live = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')
local reserved, holds = 0, 0
for i = 1, #live, 500 do
  local amounts = redis.call('HMGET', KEYS[3], unpack(live, i, math.min(i + 499, #live)))
  for j = 1, #amounts do
    local amount = tonumber(amounts[j])
    if amount then
      reserved = reserved + amount
      holds = holds + 1
    end
  end
end
return {spent, reserved, low, holds}
"""

CLAIM_LUA = """
-- KEYS: alert claim key; ARGV: now_ms, dedupe_ms (-1: once per key), ttl_s
local fired = redis.call('GET', KEYS[1])
if fired then
  local dedupe = tonumber(ARGV[2])
  if dedupe < 0 or tonumber(ARGV[1]) - tonumber(fired) < dedupe then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
return 1
"""


def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()


RESERVE_SHA = _sha(RESERVE_LUA)
SETTLE_SHA = _sha(SETTLE_LUA)
READ_SHA = _sha(READ_LUA)
CLAIM_SHA = _sha(CLAIM_LUA)
_SCRIPTS = {
    RESERVE_SHA: RESERVE_LUA,
    SETTLE_SHA: SETTLE_LUA,
    READ_SHA: READ_LUA,
    CLAIM_SHA: CLAIM_LUA,
}


class RedisBudgetBackend:
    """Budget state in Redis: one ``EVALSHA`` per reservation, settlements pipelined."""

    def __init__(self, client: Any, *, breaker: CircuitBreaker | None = None) -> None:
        import redis

        self._client = client
        self._breaker = breaker or CircuitBreaker(failure_threshold=3, cooldown_s=1.0)
        self._down: tuple[type[BaseException], ...] = (
            redis.ConnectionError,
            redis.TimeoutError,
            OSError,
        )
        self._noscript: type[BaseException] = redis.exceptions.NoScriptError
        self._response_error: type[BaseException] = redis.exceptions.ResponseError
        self._prefixes: dict[str, bytes] = {}
        self._idle: list[Any] = []
        self._idle_pid = os.getpid()

    @classmethod
    def from_url(cls, url: str, *, timeout_s: float = 0.1) -> RedisBudgetBackend:
        """A client with short socket timeouts and no retries (the breaker handles outages)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        return cls(client)

    @property
    def client(self) -> Any:
        return self._client

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

    def _evalsha(self, sha: str, numkeys: int, *args: Any) -> Any:
        client = self._client
        try:
            return client.evalsha(sha, numkeys, *args)
        except self._noscript:
            client.script_load(_SCRIPTS[sha])
            return client.evalsha(sha, numkeys, *args)

    def _pipelined(self, calls: Sequence[tuple[str, int, tuple[Any, ...]]]) -> list[Any]:
        """EVALSHA each call in one round trip; reload and rerun only those that met NOSCRIPT."""
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = self._client.pipeline(transaction=False)
            for i in todo:
                sha, numkeys, args = calls[i]
                pipe.evalsha(sha, numkeys, *args)
            replies = pipe.execute(raise_on_error=False)
            missing = []
            for i, reply in zip(todo, replies, strict=True):
                if isinstance(reply, self._noscript) and attempt == 0:
                    missing.append(i)
                elif isinstance(reply, BaseException):
                    raise reply
                else:
                    results[i] = reply
            if not missing:
                break
            for sha in {calls[i][0] for i in missing}:
                self._client.script_load(_SCRIPTS[sha])
            todo = missing
        return results

    # -- the reservation hot path -------------------------------------------------------
    #
    # Reservations run on the host's call path, so they skip redis-py's generic command
    # machinery (pool lock, retry wrapper, per-argument encoding) and write the EVALSHA
    # commands as RESP on a connection of their own: the keys and the script hash are encoded
    # once per budget.  Each reservation is still exactly one EVALSHA, several budgets' are
    # sent together (one round trip), and replies are parsed by redis-py's parser.

    def _command_prefix(self, keys: BudgetKeys) -> bytes:
        prefix = self._prefixes.get(keys.name)
        if prefix is None:
            head = [b"EVALSHA", RESERVE_SHA.encode(), b"3", keys.spent.encode(),
                    keys.holds.encode(), keys.amounts.encode()]  # fmt: skip
            prefix = b"*15\r\n" + b"".join(b"$%d\r\n%s\r\n" % (len(x), x) for x in head)
            self._prefixes[keys.name] = prefix
        return prefix

    def _pack_reserve(self, req: ReserveRequest) -> bytes:
        args = (
            b"%d" % req.now_ms,
            b"%d" % req.cur_bucket,
            b"%d" % req.min_bucket,
            b"%d" % req.limit,
            b"%d" % req.amount,
            req.hold_id.encode(),
            b"%d" % req.hold_expires_ms,
            b"1" if req.enforce else b"0",
            b"%d" % req.hold_ttl_s,
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

    def reserve(self, requests: Sequence[ReserveRequest]) -> list[ReserveResult]:
        breaker = self._breaker
        if not breaker.allow():
            raise BackendUnavailable("circuit open after repeated Redis failures")
        try:
            payload = b"".join([self._pack_reserve(req) for req in requests])
            replies = self._roundtrip(payload, len(requests))
            missing = [i for i, reply in enumerate(replies) if isinstance(reply, self._noscript)]
            if missing:  # SCRIPT FLUSH or a restarted Redis: load, then run those again
                self._client.script_load(RESERVE_LUA)
                again = b"".join([self._pack_reserve(requests[i]) for i in missing])
                for i, reply in zip(missing, self._roundtrip(again, len(missing)), strict=True):
                    replies[i] = reply
        except self._down as exc:
            breaker.record_failure()
            raise BackendUnavailable(f"Redis unavailable: {type(exc).__name__}: {exc}") from exc
        breaker.record_success()
        results = []
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
            results.append(ReserveResult(reply[0] == 1, reply[1] == 1, *reply[2:5]))
        return results

    def settle(self, settlements: Sequence[Settlement]) -> list[SettleResult]:
        if not settlements:
            return []
        calls = [
            (
                SETTLE_SHA,
                4,
                (
                    s.keys.spent,
                    s.keys.holds,
                    s.keys.amounts,
                    s.keys.writer_prefix + s.writer,
                    s.cur_bucket,
                    s.min_bucket,
                    s.spent_ttl_s,
                    s.writer_ttl_s,
                    s.cost,
                    s.seq,
                    *s.hold_ids,
                ),
            )
            for s in settlements
        ]
        replies = self._run(lambda: self._pipelined(calls))
        return [SettleResult(x[0], x[1], x[2], x[3] == 1) for x in replies]

    def read(self, keys: BudgetKeys, now_ms: int, min_bucket: int) -> BudgetReading:
        reply = self._run(
            lambda: self._evalsha(
                READ_SHA, 3, keys.spent, keys.holds, keys.amounts, now_ms, min_bucket
            )
        )
        return BudgetReading(reply[0], reply[1], reply[2], reply[3])

    def claim_alert(
        self, keys: BudgetKeys, claim: str, now_ms: int, dedupe_ms: int, ttl_s: int
    ) -> bool:
        key = keys.alert_prefix + claim
        reply = self._run(lambda: self._evalsha(CLAIM_SHA, 1, key, now_ms, dedupe_ms, ttl_s))
        return bool(reply == 1)

    def register(self, name: str, definition_json: str) -> None:
        self._run(lambda: self._client.hset(BUDGET_INDEX_KEY, name, definition_json))

    def definitions(self) -> dict[str, str]:
        raw = self._run(lambda: self._client.hgetall(BUDGET_INDEX_KEY))
        return {_text(k): _text(v) for k, v in raw.items()}

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(*self._down):
                conn.disconnect()
        with contextlib.suppress(*self._down):
            self._client.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
