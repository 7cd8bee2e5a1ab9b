"""`customer_message_requested`: how investigation and aftercare speak to a customer without
holding the contact. Intake, the contact holder, resolves the complaint's or sale's
customer, sends the text through its notification port, and publishes the outcome."""
from marshmallow import Schema, fields, validate

from shared.messaging.envelope import IdString, Text

CHANNELS = ("sms", "wechat", "email")
RECORD_TYPES = ("complaint", "sale")


class CustomerMessageRequestedV1(Schema):
    record_type = fields.String(required=True, validate=validate.OneOf(RECORD_TYPES))
    record_id = IdString(required=True)
    purpose = Text(validate.Length(min=1, max=100), required=True)
    text = Text(validate.Length(min=1, max=2000), required=True)
    language = Text(validate.Length(min=2, max=10), required=True)
    # In order of preference; intake takes the first it has a contact for.
    channels = fields.List(fields.String(validate=validate.OneOf(CHANNELS)), required=True,
                           validate=validate.Length(min=1, max=3))
