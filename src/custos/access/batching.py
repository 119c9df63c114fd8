"""Natural batching of concurrent decisions, for the service.

Each request waits on a future; one drain task takes everything queued and decides it with
one policy batch, then hands the decisions to the ledger as one durable batch, and resolves
the futures only once that batch is durable. Nothing waits for a timer: while a batch is
being decided, the next one forms, so batches grow with load and a lone request goes through
at once — group commit for decisions.

Deciding is CPU work (it holds the interpreter lock); logging is mostly waiting for the disk
(and, with several workers, for the ledger's lock). The two stages overlap: while one batch
is being made durable the next is decided, with at most ``in_flight`` batches waiting on the
ledger. No decision is answered before its own entry is durable, whatever the order.

A failing request (an unknown id) fails alone: its batch is decided again one by one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TypeVar

from custos.errors import CustosError
from custos.policy import AccessRequest, Decision

T = TypeVar("T")
#: Decides requests without logging them; raises for the first unknown id.
DecideMany = Callable[[Sequence[AccessRequest]], list[Decision]]
#: Durably logs decisions made for ``source``; returns them with their ledger receipts.
LogMany = Callable[[list[Decision], str], list[Decision]]


class DecisionBatcher:
    """Decides concurrent requests in batches of at most ``max_batch``."""

    def __init__(
        self, decide: DecideMany, log: LogMany, *, max_batch: int = 256, in_flight: int = 2
    ) -> None:
        self._decide = decide
        self._log = log
        self.max_batch = max_batch
        self._queue: list[tuple[AccessRequest, str, asyncio.Future[Decision]]] = []
        self._draining = False
        self._slots = asyncio.Semaphore(in_flight)
        self._logging: set[asyncio.Task[None]] = set()

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
                    await self._slots.acquire()
                    try:
                        decided = await self._decide_group(items)
                    except BaseException:
                        self._slots.release()
                        raise
                    task = asyncio.get_running_loop().create_task(self._log_group(source, decided))
                    self._logging.add(task)  # keep a reference until it is done
                    task.add_done_callback(self._logging.discard)
        finally:
            self._draining = False

    async def _decide_group(
        self, items: list[tuple[AccessRequest, asyncio.Future[Decision]]]
    ) -> list[tuple[asyncio.Future[Decision], Decision]]:
        """Decisions for ``items``; futures of requests that cannot be decided get their
        error now and are left out."""
        try:
            decisions = await asyncio.to_thread(self._decide, [r for r, _ in items])
        except CustosError:
            decided = []
            for request, future in items:  # isolate the failing request
                try:
                    (decision,) = await asyncio.to_thread(self._decide, [request])
                except BaseException as exc:  # noqa: BLE001 - handed to its waiter
                    _set_exception(future, exc)
                else:
                    decided.append((future, decision))
            return decided
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            for _, future in items:
                _set_exception(future, exc)
            return []
        return [(future, d) for (_, future), d in zip(items, decisions, strict=True)]

    async def _log_group(
        self, source: str, decided: list[tuple[asyncio.Future[Decision], Decision]]
    ) -> None:
        try:
            if not decided:
                return
            try:
                logged = await asyncio.to_thread(self._log, [d for _, d in decided], source)
            except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
                for future, _ in decided:
                    _set_exception(future, exc)
                return
            for (future, _), decision in zip(decided, logged, strict=True):
                _set_result(future, decision)
        finally:
            self._slots.release()


def _set_result(future: asyncio.Future[T], value: T) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future[T], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
