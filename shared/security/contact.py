"""Reading a customer's contact from intake, the contact holder, for the user working a record
in another service (investigation's archive, aftercare's visit): a grant of minutes for this
call, record and purpose travels instead of the user's token; intake logs the read. nameko's
RpcProxy waits for ever: this waits `timeout`, and a read that does not come says why, so the
record is still shown without the contact."""
from __future__ import annotations

import eventlet
from nameko.exceptions import RemoteError

from shared.security.auth import Identity, issue_grant
from shared.web.errors import NotFound, from_remote

CONTACT_TIMEOUT = 5.0  # seconds a user waits for intake before the answer goes without the contact


class ContactUnavailable(Exception):
    """Intake did not give the contact: why, in words for the user."""


def contact_reader(intake_rpc, call: str, timeout: float = CONTACT_TIMEOUT):
    """`read(identity, record_id, purpose)` -> the contact intake's RPC `call` ("intake.<method>")
    gives this user for this record and purpose, or ContactUnavailable."""
    method = call.partition(".")[2]

    def read(identity: Identity, record_id: str, purpose: str) -> dict:
        grant = issue_grant(identity, call=call, record_id=record_id, purpose=purpose)
        # In a green thread of its own, given up (killed) after `timeout`: a broker that hangs holds
        # the publish, and kombu then closes the connection waiting for the broker too.
        pending = eventlet.spawn(lambda: getattr(intake_rpc, method).call_async(grant, record_id, purpose).result())
        try:
            with eventlet.Timeout(timeout):
                return pending.wait()
        except eventlet.Timeout:
            pending.kill()
            raise ContactUnavailable(f"intake (the contact holder) did not answer within {timeout:g} s") from None
        except RemoteError as remote:
            error = from_remote(remote)
            if isinstance(error, NotFound):
                raise ContactUnavailable("intake holds no contact for this record (anonymised or removed)") from None
            raise ContactUnavailable(f"intake refused the contact: {error}") from None
        except Exception as exc:  # noqa: BLE001 - the broker away: the record is still worth reading
            raise ContactUnavailable(f"intake could not be reached ({exc.__class__.__name__})") from None
    return read
