"""asyncio plumbing for the HTTP layer: merging the output streams of several choices and
cancelling work whose client has gone away."""
from __future__ import annotations

import asyncio
import contextlib
from typing import Any, AsyncIterator, Awaitable


class ClientDisconnected(Exception):
    """The HTTP client closed the connection before the answer was ready."""


class Fanout:
    """Merge async iterators (one per choice) into one stream of ``(index, item)``.

    Each iterator is pumped by its own task; :meth:`aclose` cancels the tasks, which closes
    the iterators (so the engine client aborts their requests and frees their blocks).
    """

    _DONE = object()

    def __init__(self, iterators: list[AsyncIterator[Any]]):
        self._queue: asyncio.Queue = asyncio.Queue()
        self._remaining = len(iterators)
        self._tasks = [asyncio.ensure_future(self._pump(i, it)) for i, it in enumerate(iterators)]

    async def _pump(self, index: int, iterator: AsyncIterator[Any]) -> None:
        try:
            async for item in iterator:
                self._queue.put_nowait((index, item))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # delivered to the consumer, which decides the status
            self._queue.put_nowait((index, exc))
        finally:
            close = getattr(iterator, "close", None) or getattr(iterator, "aclose", None)
            result = close() if close else None
            if asyncio.iscoroutine(result):
                await result
            self._queue.put_nowait((index, self._DONE))

    async def next(self) -> tuple[int, Any] | None:
        """The next ``(index, item)``; ``None`` when every iterator is exhausted; raises an
        iterator's exception."""
        while self._remaining:
            index, item = await self._queue.get()
            if item is self._DONE:
                self._remaining -= 1
                continue
            if isinstance(item, Exception):
                raise item
            return index, item
        return None

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def _wait_for_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(receive, work: Awaitable[Any]) -> Any:
    """Await ``work``; cancel it and raise :class:`ClientDisconnected` if the client leaves
    first. ``receive`` is the ASGI receive channel after the body was read."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        watcher.cancel()
        raise
    if task in done:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise ClientDisconnected()
