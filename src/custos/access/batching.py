"""Natural batching of concurrent decisions, for the service.

Each request waits on a future; one drain task at a time takes everything queued, decides it
with one policy batch and one durable ledger batch (:meth:`Custos.decide_many`), and resolves
the futures. Nothing waits for a timer: while a batch is being decided, the next one forms,
so batches grow with load and a lone request goes through at once — group commit for
decisions. A failing request (an unknown id) fails alone: the batch is retried one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from custos.errors import CustosError
from custos.policy import AccessRequest, Decision

T = TypeVar("T")
DecideMany = Callable[[Sequence[AccessRequest], str], list[Decision]]


class DecisionBatcher:
    """Decides concurrent requests in batches of at most ``max_batch``."""

    def __init__(self, decide_many: DecideMany, *, max_batch: int = 256) -> None:
        self._decide_many = decide_many
        self.max_batch = max_batch
        self._queue: list[tuple[AccessRequest, str, asyncio.Future[Decision]]] = []
        self._draining = False

    async def decide(self, request: AccessRequest, source: str) -> Decision:
        """The logged decision of ``request``; raises what deciding it alone would raise."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.append((request, source, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                by_source: dict[str, list[tuple[AccessRequest, asyncio.Future[Decision]]]] = {}
                for request, source, future in batch:
                    by_source.setdefault(source, []).append((request, future))
                for source, items in by_source.items():
                    await self._decide_group(source, items)
        finally:
            self._draining = False

    async def _decide_group(
        self, source: str, items: list[tuple[AccessRequest, asyncio.Future[Decision]]]
    ) -> None:
        requests = [r for r, _ in items]
        try:
            decisions = await asyncio.to_thread(self._decide_many, requests, source)
        except CustosError:
            for request, future in items:  # isolate the failing request
                await asyncio.to_thread(raise_into, future, self._one, request, source)
            return
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            for _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), decision in zip(items, decisions, strict=True):
            if not future.done():
                future.set_result(decision)

    def _one(self, request: AccessRequest, source: str) -> Decision:
        return self._decide_many([request], source)[0]


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
