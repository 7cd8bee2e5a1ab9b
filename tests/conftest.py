# Cooperative sockets and psycopg2 before anything else imports them.
import eventlet

eventlet.monkey_patch()

from shared.runtime import green  # noqa: E402

green.patch()

import os  # noqa: E402

# The tests sign and verify with development keys made on first use in .keys/.
os.environ.setdefault("CLOSELOOP_DEV_KEYS", "1")

pytest_plugins = ["shared.testing.fixtures"]


def _quicker_consumer_stops() -> None:
    """A service's consumers look whether they are asked to stop each time their drain returns,
    at the latest after kombu's `safety_interval` (1 s): every service a test stops waited for
    it. In tests the drain returns every 0.1 s; a service in production still stops within 1 s."""
    from kombu.mixins import ConsumerMixin

    consume = ConsumerMixin.consume

    def consume_waking_often(self, limit=None, timeout=None, safety_interval=0.1, **kwargs):
        return consume(self, limit, timeout, safety_interval, **kwargs)

    ConsumerMixin.consume = consume_waking_often


_quicker_consumer_stops()
