"""In-process single flight for the retrieval cache: one computation per key, for threads and
for the asyncio tasks of each event loop; the other callers wait for what it found or computed.
"""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

from costwatch._core.forks import new_lock


class Flight:
    """One in-process computation of a key that concurrent callers wait for.

    ``shared`` is the value's JSON and its cost once known (each waiter decodes its own copy);
    ``through`` says the backend failed, so waiters call the function without the cache.
    Threads wait on ``event``; asyncio tasks on ``future``, made by the first task that waits
    (most flights of a hot cache are a lone hit: no future, nothing to share).
    """

    __slots__ = ("event", "future", "shared", "through")

    def __init__(self, threads: bool) -> None:
        self.event = threading.Event() if threads else None
        self.future: asyncio.Future[Flight] | None = None
        self.shared: tuple[bytes, Decimal] | None = None
        self.through = False

    @property
    def waited(self) -> bool:
        """Does anyone wait for what this flight finds (so it must share it)?"""
        return self.event is not None or self.future is not None


class Flights:
    """The flights in progress of one cached function, by key (and event loop, for asyncio)."""

    __slots__ = ("_flights", "_aflights", "_lock")

    def __init__(self) -> None:
        self._flights: dict[str, Flight] = {}
        self._aflights: dict[tuple[int, str], tuple[asyncio.AbstractEventLoop, Flight]] = {}
        self._lock = new_lock()

    # -- threads -----------------------------------------------------------------------------
    def join_or_lead(self, key: str) -> tuple[Flight, bool]:
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight(threads=True)
            return flight, True

    def land(self, key: str, flight: Flight) -> None:
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        assert flight.event is not None
        flight.event.set()

    # -- asyncio -----------------------------------------------------------------------------
    def ajoin_or_lead(self, key: str) -> tuple[asyncio.Future[Flight] | None, Flight]:
        """``(future, flight)``: a future to wait on for a waiter, None for the leader."""
        loop = asyncio.get_running_loop()
        ident = (id(loop), key)
        with self._lock:
            found = self._aflights.get(ident)
            if found is not None and found[0] is loop:
                flight = found[1]
                if flight.future is None:
                    flight.future = loop.create_future()
                return flight.future, flight
            flight = Flight(threads=False)
            self._aflights[ident] = (loop, flight)
        return None, flight

    def aland(self, key: str, flight: Flight) -> None:
        ident = (id(asyncio.get_running_loop()), key)
        with self._lock:
            found = self._aflights.get(ident)
            if found is not None and found[1] is flight:
                del self._aflights[ident]
        future = flight.future
        if future is not None and not future.done():
            future.set_result(flight)
