"""The engine client: one background thread owns ``LLMEngine`` and drives ``step()``;
asyncio callers get per-request queues.

The engine is single-threaded by design (:mod:`paddlellm.engine.ownership`): the engine
thread takes ownership of it for its lifetime (``engine.take_ownership()``), so a call from
any other thread fails at once. Callers send it typed operations (:class:`AddRequest`,
:class:`AbortRequest`); the thread applies them between steps, runs one step and posts each
:class:`RequestOutput` to the owning request's ``asyncio.Queue`` through
``loop.call_soon_threadsafe``. A request whose consumer stops listening (client disconnect,
task cancelled) is aborted, which frees its KV blocks at once.

Admission is bounded: at most ``max_num_seqs + max_queue`` requests are in flight; more get
:class:`QueueFullError` (the server answers 503 with ``Retry-After``: busy now). A group larger
than that bound could never be admitted: :class:`NeverAdmittedError` (a 400).
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, AsyncIterator, Union

logger = logging.getLogger(__name__)

__all__ = ["AbortRequest", "AddRequest", "AsyncEngine", "EngineDeadError", "EngineOp",
           "NeverAdmittedError", "QueueFullError", "RequestStream"]


class QueueFullError(RuntimeError):
    """Too many requests in flight: try again later."""


class NeverAdmittedError(ValueError):
    """More requests at once than the server ever admits: retrying cannot help."""


class EngineDeadError(RuntimeError):
    """The engine thread failed or was stopped."""


@dataclass(frozen=True)
class AddRequest:
    """Queue ``prompt_token_ids`` under ``request_id`` with ``params`` (``SamplingParams``)
    on the served adapter ``adapter`` (None: the base)."""

    request_id: str
    prompt_token_ids: tuple[int, ...]
    params: Any
    adapter: str | None = None


@dataclass(frozen=True)
class AbortRequest:
    """Cancel ``request_id`` and free its KV blocks."""

    request_id: str


@dataclass(frozen=True)
class ScorePrompts:
    """Prompt-token logprobs of ``prompts`` (``engine.score_prompts``), answered on
    ``future`` (of the caller's event ``loop``)."""

    prompts: tuple[tuple[int, ...], ...]
    top: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    adapter: str | None = None


#: what callers send the engine thread, applied in order between steps
EngineOp = Union[AddRequest, AbortRequest, ScorePrompts]


@dataclass
class _Stream:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    accepted: asyncio.Future
    finished: bool = False


class RequestStream:
    """Async iterator over one request's outputs; :meth:`close` (or cancelling a task
    waiting on it) aborts the request unless it finished."""

    def __init__(self, client: "AsyncEngine", request_id: str, stream: _Stream):
        self.client = client
        self.request_id = request_id
        self._stream = stream

    def __aiter__(self) -> "RequestStream":
        return self

    async def __anext__(self) -> Any:
        if self._stream.finished:
            raise StopAsyncIteration
        try:
            item = await self._stream.queue.get()
        except BaseException:  # cancelled: the consumer has gone
            self.close()
            raise
        if isinstance(item, BaseException):
            self._stream.finished = True
            raise item
        if item.finished:
            self._stream.finished = True
        return item

    def close(self) -> None:
        if not self._stream.finished:
            self._stream.finished = True
            self.client.abort(self.request_id)


_counter = itertools.count()


def _deliver(stream: _Stream, item: Any) -> None:
    try:
        if isinstance(item, BaseException):  # also fails a request not yet accepted
            stream.loop.call_soon_threadsafe(_settle, stream.accepted, item)
        stream.loop.call_soon_threadsafe(stream.queue.put_nowait, item)
    except RuntimeError:  # the consumer's event loop is closed
        pass


def _resolve(future: asyncio.Future, result: Any) -> None:
    if future.done():
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


def _settle(future: asyncio.Future, error: BaseException | None) -> None:
    if not future.done():
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)


class AsyncEngine:
    """Runs ``engine`` (an ``LLMEngine``-shaped object) in a thread; see the module doc."""

    def __init__(self, engine: Any, *, max_queue: int = 256):
        self.engine = engine
        batch = getattr(engine, "max_num_seqs", None) or engine.stats().get("max_num_seqs", 64)
        self.max_in_flight = int(batch) + int(max_queue)
        self._cond = threading.Condition()
        self._ops: list[EngineOp] = []
        self._streams: dict[str, _Stream] = {}
        self._thread: threading.Thread | None = None
        self._stop = False
        self.error: BaseException | None = None
        self._stats: dict = dict(engine.stats())

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the engine thread; returns once it owns the engine (raises
        :class:`EngineDeadError` when it cannot, e.g. another client's thread drives it)."""
        if self._thread is not None:
            return
        self._stop = False
        self.error = None
        self._owning = threading.Event()
        self._thread = threading.Thread(target=self._run, name="paddlellm-engine", daemon=True)
        self._thread.start()
        self._owning.wait()
        if self.error is not None:
            self._thread.join()
            self._thread = None
            raise EngineDeadError(f"the engine thread could not start: {self.error}") from self.error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; unfinished requests are aborted and their consumers told."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def is_running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.error is None

    # ------------------------------------------------------------------ queries
    def stats(self) -> dict:
        """The engine's last ``stats()`` (refreshed by the engine thread after every step)
        plus ``num_in_flight`` (requests admitted and not finished)."""
        with self._cond:
            return {**self._stats, "num_in_flight": len(self._streams)}

    def new_request_id(self, prefix: str = "req") -> str:
        return f"{prefix}-{next(_counter)}"

    # ------------------------------------------------------------------ requests
    def reserve(self, count: int) -> None:
        """Raise :class:`QueueFullError` unless ``count`` more requests fit now (checked
        before a multi-choice request starts, so it is admitted whole or not at all), or
        :class:`NeverAdmittedError` when ``count`` exceeds the bound itself."""
        if count > self.max_in_flight:
            raise NeverAdmittedError(f"{count} sequences requested at once, more than the "
                                     f"{self.max_in_flight} this server ever admits")
        if not self.is_running:
            raise EngineDeadError(f"the engine is not running: {self.error!r}")
        with self._cond:
            if len(self._streams) + count > self.max_in_flight:
                raise QueueFullError(f"{len(self._streams)} requests in flight "
                                     f"(limit {self.max_in_flight})")

    async def submit(self, request_id: str, prompt_token_ids: list[int],
                     params: Any, adapter: str | None = None) -> "RequestStream":
        """Add a request (on the served adapter ``adapter``; None: the base); return once the
        engine accepted it (raises the engine's error, e.g. ``ValueError`` for a prompt that
        is too long, or :class:`QueueFullError`)."""
        if not self.is_running:
            raise EngineDeadError(f"the engine is not running: {self.error!r}")
        loop = asyncio.get_running_loop()
        stream = _Stream(loop, asyncio.Queue(), loop.create_future())
        with self._cond:
            if request_id in self._streams:
                raise ValueError(f"duplicate request id '{request_id}'")
            if len(self._streams) >= self.max_in_flight:
                raise QueueFullError(f"{len(self._streams)} requests in flight "
                                     f"(limit {self.max_in_flight})")
            self._streams[request_id] = stream
            self._ops.append(AddRequest(request_id, tuple(prompt_token_ids), params, adapter))
            self._cond.notify()
        try:
            await stream.accepted
        except BaseException:
            stream.finished = True
            self.abort(request_id)  # no-op when the engine refused it
            raise
        return RequestStream(self, request_id, stream)

    async def generate(self, request_id: str, prompt_token_ids: list[int],
                       params: Any) -> AsyncIterator[Any]:
        """Yield the request's ``RequestOutput``s until one is finished; the request is
        aborted when the caller stops iterating early."""
        outputs = await self.submit(request_id, prompt_token_ids, params)
        try:
            async for out in outputs:
                yield out
        finally:
            outputs.close()

    async def score_prompts(self, prompts: list[list[int]], top: int = 0,
                            adapter: str | None = None) -> list[list[Any]]:
        """Each prompt's token logprobs (``LLMEngine.score_prompts``; on the served adapter
        ``adapter``, None: the base), computed by the engine thread between steps (one
        forward per prompt), never on the event loop."""
        if not self.is_running:
            raise EngineDeadError(f"the engine is not running: {self.error!r}")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        op = ScorePrompts(tuple(tuple(p) for p in prompts), int(top), loop, future, adapter)
        with self._cond:
            self._ops.append(op)
            self._cond.notify()
        return await future

    def abort(self, request_id: str) -> None:
        with self._cond:
            if self._streams.pop(request_id, None) is not None:
                self._ops.append(AbortRequest(request_id))
                self._cond.notify()

    # ------------------------------------------------------------------ engine thread
    def _post(self, request_id: str, item: Any, final: bool) -> None:
        with self._cond:
            stream = self._streams.get(request_id)
            if stream is not None and final:
                del self._streams[request_id]
        if stream is not None:
            _deliver(stream, item)

    def _apply(self, ops: list[EngineOp]) -> None:
        for op in ops:
            if isinstance(op, AddRequest):
                self._add(op)
            elif isinstance(op, ScorePrompts):
                self._score(op)
            elif isinstance(op, AbortRequest):
                try:
                    self.engine.abort_request(op.request_id)
                except Exception:  # already finished or never added
                    logger.debug("abort of %s ignored", op.request_id, exc_info=True)
            else:
                raise TypeError(f"unknown engine operation {op!r}")

    def _score(self, op: ScorePrompts) -> None:
        if op.future.done():  # the caller went away
            return
        try:
            extra = {} if op.adapter is None else {"adapter": op.adapter}
            result: Any = self.engine.score_prompts([list(p) for p in op.prompts], op.top, **extra)
        except Exception as exc:  # e.g. ValueError: a token id outside the vocabulary
            result = exc
        try:
            op.loop.call_soon_threadsafe(_resolve, op.future, result)
        except RuntimeError:  # the caller's loop is closed
            pass

    def _add(self, op: AddRequest) -> None:
        with self._cond:
            wanted = op.request_id in self._streams  # aborted before it was added?
        if not wanted:
            return
        try:
            extra = {} if op.adapter is None else {"adapter": op.adapter}
            self.engine.add_request(op.request_id, list(op.prompt_token_ids), op.params, **extra)
        except Exception as exc:  # e.g. ValueError: prompt too long
            self._post(op.request_id, exc, final=True)
            return
        with self._cond:
            stream = self._streams.get(op.request_id)
        if stream is not None:
            try:
                stream.loop.call_soon_threadsafe(_settle, stream.accepted, None)
            except RuntimeError:
                pass

    def _run(self) -> None:
        # an LLMEngine-shaped stand-in (tests' FakeEngine) may have no owner to check
        take = getattr(self.engine, "take_ownership", None)
        try:
            with take() if take is not None else nullcontext():
                self._owning.set()
                try:
                    self._loop()
                finally:
                    self._fail_all(EngineDeadError(f"the engine thread failed: {self.error!r}")
                                   if self.error else EngineDeadError("the engine was stopped"))
        except BaseException as exc:  # noqa: BLE001 - ownership refused: start() reports it
            if self.error is None:
                logger.exception("engine thread failed")
                self.error = exc
        finally:
            self._owning.set()

    def _loop(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._ops and not self._stop and not self.engine.has_unfinished_requests():
                        self._cond.wait()
                    if self._stop:
                        break
                    ops, self._ops = self._ops, []
                self._apply(ops)
                if self.engine.has_unfinished_requests():
                    try:
                        outs = self.engine.step()
                    except Exception as exc:  # a bug in a step: fail its requests, keep serving
                        logger.exception("engine step failed; aborting the running requests")
                        self._fail_all(RuntimeError(f"engine step failed: {exc!r}"))
                        outs = []
                    for out in outs:
                        self._post(out.request_id, out, final=bool(out.finished))
                stats = dict(self.engine.stats())
                with self._cond:
                    self._stats = stats
        except BaseException as exc:  # noqa: BLE001 - reported to every waiting request
            logger.exception("engine thread failed")
            self.error = exc

    def _fail_all(self, exc: BaseException) -> None:
        with self._cond:
            streams, self._streams = dict(self._streams), {}
            ops, self._ops = self._ops, []
        for op in ops:  # scoring waits on a future, not a stream
            if isinstance(op, ScorePrompts):
                try:
                    op.loop.call_soon_threadsafe(_resolve, op.future, exc)
                except RuntimeError:
                    pass
        for request_id, stream in streams.items():
            try:
                self.engine.abort_request(request_id)
            except Exception:
                pass
            _deliver(stream, exc)
        try:
            stats = dict(self.engine.stats())
            with self._cond:
                self._stats = stats
        except Exception:
            pass
