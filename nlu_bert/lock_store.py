"""Rasa's lock stores, without the wait that never ends when a waiting ticket expires.

Rasa 3.6 serialises the messages of a conversation with tickets (``rasa.core.lock.TicketLock``). A ticket
expires ``lock_lifetime`` seconds after it was issued, *waiting included*. When a worker dies while it holds
a conversation's ticket, the next message of that conversation (nginx retries it on another worker) waits
behind the dead ticket until it expires; if its own ticket, issued a moment later, has expired too by the
time it looks again (it looks once a second), the lock is left with no ticket equal to its number and Rasa's
``_acquire_lock`` loops until the client gives up: measured through nginx, 120 s, a 504, and the worker marked
down. The same happens to any message that waits longer than ``lock_lifetime``.

Here a waiting message whose ticket expired takes a new one (at the end of the queue) and goes on waiting;
the ticket it holds at the end is the one released. A waiting message looks at the lock every
``wait_time_in_seconds`` (0.1 s; Rasa's agent waits 1 s between looks, so the second of two quick messages of a
conversation waited up to a second after the first was done). Everything else is Rasa's.

    lock_store:
      type: nlu_bert.lock_store.ResilientRedisLockStore     # the keys of Rasa's `type: redis`
      url: ${REDIS_HOST}
      wait_time_in_seconds: 0.1                              # optional
      ...
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, List, Optional, Text

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, InMemoryLockStore, LockError, LockStore, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

logger = logging.getLogger(__name__)


DEFAULT_WAIT_SECONDS = 0.1


class RenewingTickets(LockStore):
    """``LockStore.lock`` whose waiting message takes a new ticket when its ticket expired while it waited."""

    wait_time_in_seconds = DEFAULT_WAIT_SECONDS  # between two looks at a taken lock, unless the caller says

    @asynccontextmanager
    async def lock(
        self,
        conversation_id: Text,
        lock_lifetime: float = LOCK_LIFETIME,
        wait_time_in_seconds: Optional[float] = None,
    ) -> AsyncGenerator[TicketLock, None]:
        if wait_time_in_seconds is None:
            wait_time_in_seconds = self.wait_time_in_seconds
        held = [self.issue_ticket(conversation_id, lock_lifetime)]
        try:
            yield await self._acquire_renewing(conversation_id, held, lock_lifetime, wait_time_in_seconds)
        finally:
            self.cleanup(conversation_id, held[0])

    async def _acquire_renewing(
        self, conversation_id: Text, held: List[int], lock_lifetime: float, wait_time_in_seconds: float
    ) -> TicketLock:
        """Rasa's ``_acquire_lock`` for the ticket in ``held[0]``, renewed there when it expired."""
        while True:
            lock = self.get_lock(conversation_id)
            if not lock:
                break
            if not lock.is_locked(held[0]):
                return lock
            if lock._ticket_for_ticket_number(held[0]) is None:  # expired while this message waited
                held[0] = self.issue_ticket(conversation_id, lock_lifetime)
                logger.warning(
                    f"Lock store: a message of conversation '{conversation_id}' waited longer than the lock "
                    f"lifetime ({lock_lifetime:g} s); it takes a new ticket and goes on waiting."
                )
                continue
            await asyncio.sleep(wait_time_in_seconds)
            self.update_lock(conversation_id)
        raise LockError(f"Could not acquire lock for conversation_id '{conversation_id}'.")


class ResilientRedisLockStore(RenewingTickets, RedisLockStore):
    """Rasa's ``RedisLockStore`` (same keys as ``type: redis``) with ``RenewingTickets``."""

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, **kwargs: Any) -> None:
        if endpoint_config is not None:  # how Rasa creates a lock store named by its module path
            kwargs = {"host": endpoint_config.url or "localhost", **endpoint_config.kwargs, **kwargs}
        self.wait_time_in_seconds = _wait_seconds(kwargs.pop("wait_time_in_seconds", DEFAULT_WAIT_SECONDS))
        super().__init__(**kwargs)


class ResilientInMemoryLockStore(RenewingTickets, InMemoryLockStore):
    """Rasa's ``InMemoryLockStore`` with ``RenewingTickets`` (one process)."""

    def __init__(self, endpoint_config: Optional[EndpointConfig] = None, **kwargs: Any) -> None:
        options = {**(endpoint_config.kwargs if endpoint_config is not None else {}), **kwargs}
        self.wait_time_in_seconds = _wait_seconds(options.get("wait_time_in_seconds", DEFAULT_WAIT_SECONDS))
        super().__init__()


def _wait_seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 10:
        raise ValueError(
            f"Lock store: `wait_time_in_seconds` must be a number of seconds in (0, 10], got {value!r}; set it in "
            f"the lock_store section of endpoints.yml."
        )
    return float(value)
