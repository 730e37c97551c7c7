"""Coalesce concurrent calls into one round trip.

The gateway talks to Redis over one command connection per worker. When a thousand clients
reconnect at once, a thousand one-key calls would queue behind each other; a `Batcher` sends
whatever is waiting as one call instead, so a burst costs a few round trips. An idle batcher
adds no delay: the first call of a burst goes out at once, and calls that arrive meanwhile
form the next batch.

One bad request must not fail its neighbours: when a batch fails with one of the `isolate`
exceptions (an error the server answered, as opposed to the connection failing), each of its
requests is run again on its own, so only the bad one fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class Batcher(Generic[Request, Result]):
    def __init__(
        self,
        run: Callable[[list[Request]], Awaitable[list[Result]]],
        *,
        limit: int,
        isolate: tuple[type[Exception], ...] = (),
    ) -> None:
        self._run = run
        self._limit = limit
        self._isolate = isolate
        self._waiting: list[tuple[Request, asyncio.Future[Result]]] = []
        self._task: asyncio.Task[None] | None = None

    async def call(self, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.append((request, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="batcher")
        return await future

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[: self._limit], self._waiting[self._limit :]
            live = [(request, future) for request, future in batch if not future.done()]
            if not live:
                continue
            try:
                await self._settle(live)
            except Exception as exc:
                if len(live) > 1 and isinstance(exc, self._isolate):
                    for one in live:  # one at a time: only the bad request fails
                        try:
                            await self._settle([one])
                        except Exception as single:
                            _fail([one], single)
                else:
                    _fail(live, exc)  # every caller of this batch gets the failure

    async def _settle(self, live: list[tuple[Request, asyncio.Future[Result]]]) -> None:
        results = await self._run([request for request, _ in live])
        for (_, future), result in zip(live, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(live: list[tuple[Any, asyncio.Future[Any]]], exc: Exception) -> None:
    for _, future in live:
        if not future.done():
            future.set_exception(exc)
