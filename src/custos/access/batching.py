"""Natural batching of concurrent requests on the guarded path, for the service.

Each request waits on a future; one drain task at a time takes everything queued, runs it
through one batch function — :meth:`Custos.decide_many` for checks (one policy batch, one
durable ledger batch), :meth:`Custos.read_many` for reads (the same, with each release
logged right after its decision) — and resolves the futures. Nothing waits for a timer:
while a batch runs, the next one forms, so batches grow with load and a lone request goes
through at once — group commit on the guarded path.

A request that fails alone stays alone: when the batch function raises a
:class:`CustosError` (an unknown id, found before anything is logged; an unwritable ledger,
where nothing was logged either), the batch is retried one request at a time, and an error
the batch function reports for one request (a read whose ciphertext fails its check, after
its decision was logged) goes to that request's caller only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from custos.errors import CustosError
from custos.policy import AccessRequest

T = TypeVar("T")
#: Runs requests (from one source) as one batch; one outcome per request, in order: its
#: result or the error it alone raised. Raising means the whole batch failed with nothing
#: logged, so that running the requests again one by one is safe.
BatchFunction = Callable[[Sequence[AccessRequest], str], Sequence[T | CustosError]]


class RequestBatcher(Generic[T]):
    """Runs concurrent requests through ``run_many`` in batches of at most ``max_batch``."""

    def __init__(self, run_many: BatchFunction[T], *, max_batch: int = 256) -> None:
        self._run_many = run_many
        self.max_batch = max_batch
        self._queue: list[tuple[AccessRequest, str, asyncio.Future[T]]] = []
        self._draining = False

    async def submit(self, request: AccessRequest, source: str) -> T:
        """The outcome of ``request``; raises what running it alone would raise."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.append((request, source, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                by_source: dict[str, list[tuple[AccessRequest, asyncio.Future[T]]]] = {}
                for request, source, future in batch:
                    by_source.setdefault(source, []).append((request, future))
                for source, items in by_source.items():
                    await self._run_group(source, items)
        finally:
            self._draining = False

    async def _run_group(
        self, source: str, items: list[tuple[AccessRequest, asyncio.Future[T]]]
    ) -> None:
        requests = [r for r, _ in items]
        try:
            outcomes = await asyncio.to_thread(self._run_many, requests, source)
        except CustosError:
            for request, future in items:  # isolate the failing request
                await asyncio.to_thread(raise_into, future, self._one, request, source)
            return
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(items, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, CustosError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _one(self, request: AccessRequest, source: str) -> T:
        (outcome,) = self._run_many([request], source)
        if isinstance(outcome, CustosError):
            raise outcome
        return outcome


def raise_into(
    future: asyncio.Future[T], fn: Callable[[AccessRequest, str], T], *args: object
) -> None:
    """Run ``fn(*args)`` and put its result or exception into ``future`` (thread-safe)."""
    loop = future.get_loop()
    try:
        result = fn(*args)  # type: ignore[arg-type]
    except BaseException as exc:  # noqa: BLE001 - handed to the waiter
        loop.call_soon_threadsafe(_set_exception, future, exc)
    else:
        loop.call_soon_threadsafe(_set_result, future, result)


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
