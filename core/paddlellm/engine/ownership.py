"""The engine's one concurrency rule: it belongs to one thread at a time, and that is checked.

:class:`~paddlellm.engine.LLMEngine` holds no lock around its state: the scheduler, the block
tables and the sequences are touched by plain Python code that assumes nobody else is in
it. Instead of a lock that makes every call wait (and hides a design error until it
deadlocks), the engine has an *owner*: the thread that built it. Every call from another
thread raises :class:`EngineThreadError` at once, whatever the timing, so a misuse is found
by the first test that makes it rather than by a rare race in production.

Ownership moves explicitly: ``with engine.take_ownership():`` makes the calling thread the
owner until the block ends (the previous owner gets it back). The server's engine client
(:class:`paddlellm.serving.AsyncEngine`) does this in its engine thread; everything else
talks to that thread through typed operations. ``stats()`` is the one exception: a snapshot
of counters that any thread may read (monitoring).
"""
from __future__ import annotations

import functools
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

__all__ = ["EngineThreadError", "ThreadOwner", "owned"]

F = TypeVar("F", bound=Callable)


class EngineThreadError(RuntimeError):
    """An engine was called from a thread that does not own it."""


class ThreadOwner:
    """Which thread may call an object now (see the module docstring)."""

    def __init__(self, what: str = "LLMEngine") -> None:
        self.what = what
        self._lock = threading.Lock()  # guards the fields below, never the engine's state
        self._owner = threading.current_thread()
        self._scoped = False  # the owner holds it through take_ownership()
        self._depth = 0  # calls of the owner in progress (nested calls count)

    @property
    def owner(self) -> threading.Thread:
        return self._owner

    def _refuse(self, me: threading.Thread, doing: str) -> EngineThreadError:
        return EngineThreadError(
            f"{self.what} is owned by thread '{self._owner.name}' and was {doing} from thread "
            f"'{me.name}': the engine is single-threaded by design. Call it from its owner, "
            f"move it with `with engine.take_ownership():` in the new thread, or serve it "
            f"through paddlellm.serving.AsyncEngine (which owns it in its engine thread).")

    @contextmanager
    def call(self) -> Iterator[None]:
        """Enter one call of the owner; any other thread gets :class:`EngineThreadError`."""
        me = threading.current_thread()
        with self._lock:
            if self._owner is not me:
                raise self._refuse(me, "called")
            self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1  # only the owner writes it; take() reads it under the lock

    @contextmanager
    def take(self) -> Iterator[None]:
        """Make the calling thread the owner for the block. Refused while the owner is inside
        a call or holds the engine through its own ``take`` (an engine driven by two threads
        at once)."""
        me = threading.current_thread()
        with self._lock:
            if self._owner is not me and (self._depth or (self._scoped and self._owner.is_alive())):
                raise self._refuse(me, "claimed" if self._scoped else "claimed mid-call")
            previous = (self._owner, self._scoped)
            self._owner, self._scoped = me, True
        try:
            yield
        finally:
            with self._lock:
                self._owner, self._scoped = previous


def owned(method: F) -> F:
    """Decorate an engine method: it runs only on the thread that owns the engine
    (``self._owner``, a :class:`ThreadOwner`). Inlined :meth:`ThreadOwner.call` (a method
    call costs ~1 us more than without the check)."""

    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        owner = self._owner
        me = threading.current_thread()
        with owner._lock:
            if owner._owner is not me:
                raise owner._refuse(me, "called")
            owner._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            owner._depth -= 1  # only the owner writes it; take() reads it under the lock

    return checked  # type: ignore[return-value]
