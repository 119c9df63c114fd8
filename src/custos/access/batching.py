"""Natural batching of concurrent requests on the guarded path.

Concurrent requests are run together through one batch function — :meth:`Custos.decide_many`
for checks (one policy batch, one durable ledger batch), :meth:`Custos.read_many` for reads
(the same, with each release logged right after its decision). Nothing waits for a timer:
while a batch runs, the next one forms, so batches grow with load and a lone request goes
through at once — group commit on the guarded path. Two front doors share the rules:
:class:`RequestBatcher` for the service's event loop, :class:`ThreadBatcher` for callers on
threads (``Custos.decide`` and ``Custos.read``).

A request that fails alone stays alone: when the batch function raises a
:class:`CustosError` (an unknown id, found before anything is logged; an unwritable ledger,
where nothing was logged either), the batch is run again one request at a time, and an error
the batch function reports for one request (a read whose ciphertext fails its check, after
its decision was logged) goes to that request's caller only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from custos.errors import CustosError
from custos.policy import AccessRequest

T = TypeVar("T")
#: Runs requests (from one source) as one batch; one outcome per request, in order: its
#: result or the error it alone raised. Raising means the whole batch failed with nothing
#: logged, so that running the requests again one by one is safe. It must not call back
#: into the batcher that runs it.
BatchFunction = Callable[[Sequence[AccessRequest], str], Sequence[T | CustosError]]


def run_batch(
    run_many: BatchFunction[T], requests: Sequence[AccessRequest], source: str
) -> list[T | CustosError]:
    """One outcome per request: ``run_many`` over all of them, or over each alone when the
    batch as a whole fails with a :class:`CustosError`. Other exceptions propagate, a
    ``StopIteration`` as a ``RuntimeError``: asyncio cannot hand that one to a waiter, which
    would then wait for ever."""
    try:
        try:
            return list(run_many(requests, source))
        except CustosError as failed:
            if len(requests) == 1:
                return [failed]
        outcomes: list[T | CustosError] = []
        for request in requests:
            try:
                outcomes.extend(run_many([request], source))
            except CustosError as exc:
                outcomes.append(exc)
        return outcomes
    except StopIteration as exc:
        raise RuntimeError("the batch function raised StopIteration") from exc


def _by_source(items: Sequence[tuple[AccessRequest, str, T]]) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, (_, source, _) in enumerate(items):
        groups.setdefault(source, []).append(i)
    return groups


class RequestBatcher(Generic[T]):
    """Runs requests from coroutines through ``run_many`` (on a worker thread) in batches of
    at most ``max_batch``."""

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
                for indexes in _by_source(batch).values():
                    await self._run_group([batch[i] for i in indexes])
        finally:
            self._draining = False

    async def _run_group(self, items: list[tuple[AccessRequest, str, asyncio.Future[T]]]) -> None:
        requests = [r for r, _, _ in items]
        try:
            outcomes = await asyncio.to_thread(self._outcomes, requests, items[0][1])
        except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), outcome in zip(items, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, CustosError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    def _outcomes(self, requests: list[AccessRequest], source: str) -> list[T | CustosError]:
        return run_batch(self._run_many, requests, source)


class _Waiting(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class ThreadBatcher(Generic[T]):
    """Runs requests from threads through ``run_many`` in batches of at most ``max_batch``.

    The first caller to find no batch running runs everything queued, its own request among
    it, while the others wait; then they return, and the next one queued runs the next
    batch. A lone caller runs its request at once, on its own thread.
    """

    def __init__(self, run_many: BatchFunction[T], *, max_batch: int = 256) -> None:
        self._run_many = run_many
        self.max_batch = max_batch
        self._queue: list[tuple[AccessRequest, str, _Waiting[T]]] = []
        self._running = False
        self._changed = threading.Condition(threading.Lock())

    def run(self, request: AccessRequest, source: str) -> T:
        """The outcome of ``request``; raises what running it alone would raise."""
        mine: _Waiting[T] = _Waiting()
        with self._changed:
            self._queue.append((request, source, mine))
            while not mine.done:
                if self._running:
                    self._changed.wait()
                    continue
                self._running = True
                batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
                self._changed.release()
                try:
                    self._run(batch)
                finally:
                    self._changed.acquire()
                    self._running = False
                    self._changed.notify_all()
        if mine.error is not None:
            raise mine.error
        return mine.result  # type: ignore[return-value]  # set whenever error is not

    def _run(self, batch: list[tuple[AccessRequest, str, _Waiting[T]]]) -> None:
        for indexes in _by_source(batch).values():
            items = [batch[i] for i in indexes]
            try:
                outcomes: Sequence[T | BaseException] = run_batch(
                    self._run_many, [r for r, _, _ in items], items[0][1]
                )
            except BaseException as exc:  # noqa: BLE001 - every waiter must learn the outcome
                outcomes = [exc] * len(items)
            for (_, _, waiting), outcome in zip(items, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    waiting.error = outcome
                else:
                    waiting.result = outcome
                waiting.done = True
