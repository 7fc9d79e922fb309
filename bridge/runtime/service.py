"""Something that is started and closed, used as ``async with`` (:class:`Service`) or, started and closed by
blocking calls, as ``with`` (:class:`SyncService`).

::

    async with SipGateway(config, on_incoming=handle) as gateway:   # start(), then close() however the block ends
        ...
    with EmbeddedRedis() as redis:                                   # the same, blocking
        ...
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Service(abc.ABC):
    """``async with`` runs :meth:`start` on the way in and :meth:`close` on the way out (also on an exception,
    which goes on)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Take the resources (sockets, the pjsua2 endpoint, ...) and begin."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Give them back."""

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class SyncService(abc.ABC):
    """``with`` runs :meth:`start` on the way in and :meth:`close` on the way out (also on an exception, which goes
    on): :class:`Service` for things started and closed by blocking calls (processes, network namespaces)."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Take the resources and begin; this object, ready."""

    @abc.abstractmethod
    def close(self) -> None:
        """Give them back."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
