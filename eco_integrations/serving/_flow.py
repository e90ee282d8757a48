"""Flow control of the gateway: generation slots and their queue, deadlines, worker threads, streaming out of a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import StreamingResponse

from ..exceptions import GenerationCancelledError
from ._wire import APIError


class Admission:
    """Generation slots (``max_concurrency``) and a bounded queue in front of them.

    A slot is held by a token object from admission until the worker thread generating for it
    ends, so streams count against the limit for as long as they generate.
    """

    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        self.limiter = anyio.CapacityLimiter(max_concurrency)
        self.max_queue = max_queue
        self.waiting = 0

    @property
    def running(self) -> int:
        return int(self.limiter.borrowed_tokens)

    async def acquire(self, token: object, retry_after: int) -> None:
        if self.limiter.available_tokens < 1 and self.waiting >= self.max_queue:
            msg = f"The gateway is at capacity ({self.running} generating, {self.waiting} queued); retry after {retry_after} s."
            raise APIError(
                429,
                msg,
                type_="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"retry-after": str(retry_after)},
            )
        self.waiting += 1
        try:
            # Cancelled here (client gone, deadline) means the request never reaches the model.
            await self.limiter.acquire_on_behalf_of(token)
        finally:
            self.waiting -= 1

    def release(self, token: object) -> None:
        self.limiter.release_on_behalf_of(token)


class Slot:
    """One request's hold on a generation slot; released once, from any thread."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._token = object()
        self._held = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.handed_to_thread = False  # a worker thread now owns the release

    async def acquire(self, retry_after: int) -> None:
        await self._admission.acquire(self._token, retry_after)
        self._loop = asyncio.get_running_loop()
        self._held = True

    def release(self) -> None:
        """Event-loop thread only."""
        if self._held:
            self._held = False
            self._admission.release(self._token)

    def release_from_thread(self) -> None:
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
                self._loop.call_soon_threadsafe(self.release)


class ClientGoneError(Exception):
    """The client disconnected before its answer was ready."""


class DeadlineExceededError(Exception):
    """A stream passed the request deadline."""


def deadline_error(timeout: float | None) -> APIError:
    return APIError(
        504,
        f"The request did not finish within the gateway's {timeout} s request timeout; generation was cancelled. "
        "Ask for fewer tokens or retry.",
        type_="server_error",
        code="timeout",
    )


async def disconnected(request: Request) -> None:
    """Return once the client has disconnected (the body was already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def in_thread(fn: Callable[[], Any], slot: Slot | None) -> Any:
    """``fn()`` in a daemon thread of its own, releasing ``slot`` when it ends.

    Daemon: a generation the gateway gave up on (cancelled, it stops at the next token) never
    keeps the process alive past its shutdown timeout; the thread, not the awaiting task, frees
    the slot, so the concurrency limit counts work actually running.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not future.done():
            future.set_result(value) if ok else future.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as err:  # handed to the awaiting task
            outcome = (False, err)
        if slot is not None:
            slot.release_from_thread()  # scheduled first: the slot is free when the awaiting task resumes
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(settle, *outcome)

    if slot is not None:
        slot.handed_to_thread = True
    threading.Thread(target=work, name="eco-generate", daemon=True).start()
    return await future


class SlotStreamingResponse(StreamingResponse):
    """A stream that cancels generation and frees its slot however it ends (even unstarted)."""

    def __init__(self, content: Any, *, slot: Slot, cancel: threading.Event, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._slot, self._cancel = slot, cancel

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cancel.set()
            if not self._slot.handed_to_thread:
                self._slot.release()


async def pump(
    stream: Any, cancel: threading.Event, slot: Slot, deadline: float | None
) -> AsyncIterator[str]:
    """Iterate a blocking chunk iterator from a worker thread without tying up the event loop.

    When the consumer stops early (the client disconnected, the deadline passed, shutdown),
    ``cancel`` is set, which stops generation at the next token (the transformers stopping
    criterion, or closing the HTTP stream to vLLM); the worker closes the iterator itself (a
    generator may only be closed by the thread running it) and then frees the slot.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def put(item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def work() -> None:
        chunks = iter(stream)
        try:
            for chunk in chunks:
                if cancel.is_set():
                    break
                put(("chunk", chunk))
        except BaseException as err:  # handed to the consumer
            put(("error", err))
        finally:
            try:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()
            finally:
                put(("end", None))
                slot.release_from_thread()

    slot.handed_to_thread = True
    threading.Thread(target=work, name="eco-stream", daemon=True).start()
    try:
        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                kind, value = await asyncio.wait_for(queue.get(), timeout)
            except asyncio.TimeoutError:
                raise DeadlineExceededError from None
            if kind == "end":
                return
            if kind == "error":
                if isinstance(value, GenerationCancelledError) and cancel.is_set():
                    return
                raise value
            yield value
    finally:
        cancel.set()
