# Cooperative sockets and psycopg2 before anything else imports them.
import eventlet

eventlet.monkey_patch()

from shared import green  # noqa: E402

green.patch()

pytest_plugins = ["shared.testing.fixtures"]
