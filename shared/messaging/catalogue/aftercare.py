"""Aftercare's events. Its visit events come with the aftercare issue; today only the
request for a message to a customer (an SMS after unanswered calls)."""
from shared.messaging.catalogue.messages import CustomerMessageRequestedV1

SOURCE = "aftercare"

SCHEMAS = {
    ("customer_message_requested", 1): CustomerMessageRequestedV1,
}
