"""Copies of a message to a queue, confirmed by the broker into an existing queue: the
retry and dead-letter copies of the consumer, and the replays of `closeloop dlq replay`.
Published mandatory, so a copy to a missing queue comes back instead of being confirmed
and dropped, and the original is kept."""
from __future__ import annotations

import kombu


class Unroutable(Exception):
    """The broker returned the copy: no queue of that name exists."""


class CopyPublisher:
    def __init__(self, amqp_uri: str, connect_timeout: float = 5, confirm_timeout: float = 10):
        self._uri = amqp_uri
        self._timeout = connect_timeout
        # A broker that stops answering without closing the connection must not hold the
        # original message (and every other copy behind the lock) for minutes.
        self._confirm_timeout = confirm_timeout
        self._conn = None
        self._producer = None
        self._returned = None

    def _ready(self) -> kombu.Producer:
        if self._conn is None:
            self._conn = kombu.Connection(self._uri, connect_timeout=self._timeout, transport_options={
                "confirm_publish": True, "read_timeout": self._confirm_timeout,
                "write_timeout": self._confirm_timeout})
            self._producer = kombu.Producer(self._conn.channel(), on_return=self._on_return)
            # read_timeout is SO_RCVTIMEO, which eventlet's green sockets ignore.
            self._conn.connection.transport.sock.settimeout(self._confirm_timeout)
        return self._producer

    @property
    def channel(self):
        return self._ready().channel

    def _on_return(self, exception, exchange, routing_key, message):
        # The broker returns a mandatory message it cannot route before it confirms it.
        self._returned = f"no queue {routing_key!r} ({exception})"

    def copy(self, message, headers: dict, routing_key: str, exchange: str = "") -> None:
        """Publish a copy of `message` with `headers`; returns once the broker confirmed it
        into a queue. Raises Unroutable, or the connection's error (then reconnects next time)."""
        self._returned = None
        try:
            self._ready().publish(
                message.body, exchange=exchange, routing_key=routing_key, headers=headers, mandatory=True,
                content_type=message.content_type or "application/octet-stream",
                content_encoding=message.content_encoding or "binary",
                message_id=message.properties.get("message_id"), delivery_mode=2, serializer=None,
                confirm_timeout=self._confirm_timeout)
        except Exception:
            self.close()
            raise
        if self._returned:
            raise Unroutable(self._returned)

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.collect()  # no closing handshake: a silent broker would not answer it
            except Exception:  # the connection may already be gone
                pass
        self._conn = self._producer = None
