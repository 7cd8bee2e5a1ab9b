# Cooperative sockets and psycopg2 before anything else imports them.
import eventlet

eventlet.monkey_patch()

from shared.runtime import green  # noqa: E402

green.patch()

import os  # noqa: E402

# The tests sign and verify with development keys made on first use in .keys/.
os.environ.setdefault("CLOSELOOP_DEV_KEYS", "1")

pytest_plugins = ["shared.testing.fixtures"]
