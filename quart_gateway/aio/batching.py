"""Coalesce concurrent calls into one round trip.

The gateway talks to Redis over one command connection per worker. When a thousand clients
reconnect at once, a thousand one-key calls would queue behind each other; a `Batcher` sends
whatever is waiting as one call instead, so a burst costs a few round trips. An idle batcher
adds no delay: the first call of a burst goes out at once, and calls that arrive meanwhile
form the next batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Request = TypeVar("Request")
Result = TypeVar("Result")


class Batcher(Generic[Request, Result]):
    def __init__(
        self, run: Callable[[list[Request]], Awaitable[list[Result]]], *, limit: int
    ) -> None:
        self._run = run
        self._limit = limit
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
                results = await self._run([request for request, _ in live])
            except Exception as exc:  # every caller of this batch gets the failure
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(live, results, strict=True):
                if not future.done():
                    future.set_result(result)
