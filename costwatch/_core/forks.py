"""Fork safety: a process may fork at any moment and its child keeps working.

Pre-fork servers (gunicorn ``--preload``, uWSGI), ``multiprocessing`` with the fork start method
and Celery's prefork pool fork a process that has configured costwatch, possibly while one of
costwatch's threads is half-way through something.  Only the forking thread lives on in the
child: whatever the other threads held stays held there, forever.  Three rules keep a child
from inheriting anything half-way:

* background work that imports modules or loads data (the warm-up) runs in ``background()``
  sections.  A fork waits for the running sections to end (at most ``FORK_WAIT_S``: a fork in
  the first second after ``configure()`` is delayed until the warm-up is done) and no new one
  starts until the fork is done, so a child never inherits an import lock held by a thread it
  does not have, nor a half-imported module;
* every lock made by ``new_lock()`` is released in the child (``_at_fork_reinit``): a lock a
  host thread held at the fork (recording a call, reading totals) would never be released
  there.  The data it guarded may be one update short in the child: totals are per process;
* state that belongs to the process (sockets, threads, queued work) is rebuilt by callbacks
  registered with ``after_fork_in_child`` (held weakly: registering never keeps an object
  alive), run in the child in the order they were registered.

What the parent recorded before the fork stays in the child's copy of the in-process totals
(``summary()``, the single-process exporter), as with any fork; under prometheus-client
multiprocess mode each process writes its own file, so nothing is counted twice there.
"""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401 - imported first: see the registration below
import contextlib
import logging  # imported first: see the registration below
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

FORK_WAIT_S = 10.0
"""How long a fork waits for running background sections before it goes ahead anyway."""


class _Sections:
    """Running background sections, and whether a fork is waiting for them to end."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.Lock())
        self.active = 0
        self.forking = False


_sections = _Sections()
_locks: weakref.WeakSet[Any] = weakref.WeakSet()
_callbacks: list[Callable[[], Callable[[], None] | None]] = []
_registry_lock = threading.Lock()


@contextmanager
def background() -> Iterator[None]:
    """Run the block as background work a fork waits for (imports, loading data)."""
    sections = _sections
    with sections.cond:
        while sections.forking:
            sections.cond.wait()
        sections.active += 1
    try:
        yield
    finally:
        with sections.cond:
            sections.active -= 1
            if not sections.active:
                sections.cond.notify_all()


def new_lock() -> threading.Lock:
    """A ``threading.Lock`` that is released in a forked child."""
    lock = threading.Lock()
    with _registry_lock:
        _locks.add(lock)
    return lock


def new_rlock() -> threading.RLock:
    """A ``threading.RLock`` that is released in a forked child."""
    lock = threading.RLock()
    with _registry_lock:
        _locks.add(lock)
    return lock


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every child forked from now on.  A bound method is held weakly
    (its object may go away; the callback then goes too)."""
    ref: Callable[[], Callable[[], None] | None]
    if hasattr(callback, "__self__") and hasattr(callback, "__func__"):
        ref = weakref.WeakMethod(callback)
    else:
        ref = lambda: callback  # noqa: E731 - a strong reference, called like a weak one
    with _registry_lock:
        _callbacks[:] = [r for r in _callbacks if r() is not None]
        _callbacks.append(ref)


def _before() -> None:
    sections = _sections
    sections.cond.acquire()  # held through the fork: no section starts meanwhile
    sections.forking = True
    sections.cond.wait_for(lambda: sections.active == 0, timeout=FORK_WAIT_S)
    _registry_lock.acquire()


def _after_in_parent() -> None:
    _registry_lock.release()
    sections = _sections
    sections.forking = False
    sections.cond.notify_all()
    sections.cond.release()


def _after_in_child() -> None:
    global _sections, _registry_lock
    _sections = _Sections()  # the threads of the parent's sections do not exist here
    _registry_lock = threading.Lock()
    for lock in list(_locks):
        reinit = getattr(lock, "_at_fork_reinit", None)
        if reinit is not None:
            reinit()
    for ref in list(_callbacks):
        callback = ref()
        if callback is not None:
            try:
                callback()
            except Exception as exc:  # one broken callback must not stop the others
                with contextlib.suppress(Exception):
                    logging.getLogger("costwatch").warning(
                        "costwatch could not rebuild %r in a forked child: %r", callback, exc
                    )


# Hooks run before a fork in the reverse order of their registration.  ``logging`` and
# ``concurrent.futures`` (imported above) take a lock of theirs in their own hooks: registered
# first, they run after ours, so a background section that needs those locks can still finish
# (a module that calls ``logging.getLogger`` as it is imported), and a section that imports
# them registers no hook half-way through a fork (its "after" would release a lock its "before"
# never took).
os.register_at_fork(
    before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child
)
