"""The Redis store's ``Listener``: one pub/sub connection on the store's
channel, and the thread reading it while anybody subscribes."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import cast

import redis

from .subscribers import ListenerThread

logger = logging.getLogger("jobstatus.redis")

#: How long the listener waits for a message before it looks whether it
#: should stop: the bound on how long ``stop`` waits for it.
LISTEN_SECONDS = 0.1
#: The listener's wait before reconnecting doubles from the first to the last.
RECONNECT_FIRST_SECONDS = 0.1
RECONNECT_LAST_SECONDS = 5.0


class RedisListener(ListenerThread):
    """Calls ``notify`` for each message on ``channel``, and once after every
    subscription that follows a lost connection (redis-py's own silent
    reconnect included: it subscribes again, and the confirmation is seen
    here): a change made meanwhile was never published to it, and is read
    again by whoever the call wakes. Started when made; it looks whether to
    stop every ``LISTEN_SECONDS``.
    """

    def __init__(
        self, client: redis.Redis, channel: str, notify: Callable[[], None]
    ) -> None:
        super().__init__("jobstatus-redis-listener", notify)
        self._channel = channel
        # redis-py leaves pubsub() unannotated; the object it makes is typed.
        self._new_pubsub = cast(Callable[[], redis.client.PubSub], client.pubsub)
        self._start()

    def _listen(self) -> None:
        delay = RECONNECT_FIRST_SECONDS
        # Only the very first subscription follows no gap: the first
        # subscriber waits for it (``wait_listening``).
        first = True
        while not self._stopping.is_set():
            pubsub = self._new_pubsub()
            try:
                pubsub.subscribe(self._channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=LISTEN_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # From now on every write is heard.
                        self._listening.set()
                        delay = RECONNECT_FIRST_SECONDS
                        if first:
                            first = False
                            continue
                        # Subscribed again: writes made meanwhile went unheard.
                    self._notify()
            except Exception as exc:
                logger.warning(
                    "Redis change listener: %s; reconnecting in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                first = False
                self._stopping.wait(delay)
                delay = min(delay * 2, RECONNECT_LAST_SECONDS)
            finally:
                with contextlib.suppress(Exception):
                    pubsub.close()
