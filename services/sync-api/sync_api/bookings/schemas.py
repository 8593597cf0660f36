"""The bodies and answers of ``/api/tours``, ``/api/bookings`` and ``/api/payments`` (validation and the document)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from sync_api.bookings.idempotency import KEY_CHARACTERS, MAX_KEY_LENGTH
from sync_api.web.schemas import Page, PageQuery
from sync_api.web.validation import Amount, AwareDateTime, EmailAddress, Id, Text, WholeNumber

#: Bounds that keep every value inside its column and out of absurdity: a booking's total (price x seats)
#: stays below the column's 1e12.
MAX_QUOTA, MAX_SEATS_PER_BOOKING, PRICE_LIMIT = 100_000, 1_000, Decimal("1e9")
Money = Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]{2}$", description="rupiah, two decimals, as a string")]
Moment = Annotated[str, Field(description="ISO 8601 with its time zone")]


class NewTour(BaseModel):
    name: Annotated[str, Text(200)]
    quota: Annotated[int, WholeNumber(0, MAX_QUOTA)] = Field(description="seats on sale")
    price: Annotated[Decimal, Amount(PRICE_LIMIT)] = Field(description="per seat")
    starts_at: AwareDateTime


class Tour(BaseModel):
    id: int
    name: str
    quota: int = Field(description="seats left")
    price: Money
    starts_at: Moment


class NewBooking(BaseModel):
    """Fields not named here are ignored (an ``Idempotency-Key`` replay compares the whole body)."""

    tour_id: Id
    quantity: Annotated[int, WholeNumber(1, MAX_SEATS_PER_BOOKING)]
    customer_name: Annotated[str, Text(200)]
    customer_email: EmailAddress


class BookingHeaders(BaseModel):
    """``Idempotency-Key`` (optional): the same key and body book once; checked by
    :func:`sync_api.bookings.idempotency.parse_key`, which says what is wrong with one."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    idempotency_key: Annotated[str | None, WithJsonSchema({
        "type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH, "pattern": f"^{KEY_CHARACTERS.pattern}$",
    })] = Field(
        None, alias="Idempotency-Key",
        description="book once per key: a repeat answers the first booking with `Idempotent-Replayed: true`; "
                    "the same key with another body is a 422; keys are kept 24 hours",
    )


class BookingCreated(BaseModel):
    id: int
    code: str = Field(description="unique; the payment's order_id")
    status: str = Field(description="``pending``")
    total_amount: Money
    expires_at: Moment
    tour_id: int
    quantity: int


class BookingSummary(BaseModel):
    id: int
    code: str
    tour_id: int
    customer_name: str
    customer_email: str
    quantity: int
    total_amount: Money
    status: str = Field(description="pending, paid, expired, cancelled or refunded")
    created_at: Moment
    expires_at: Moment
    paid_at: Moment | None


class BookingEmail(BaseModel):
    """One email of the booking: its kind's delivery (one per kind, ever), or a resend an operator asked for."""

    kind: str = Field(description="invoice, eticket or cancellation")
    status: str = Field(description="pending, sent or failed")
    sent_at: Moment | None
    message_id: str | None = Field(description="the email's Message-ID header (a resend has its own)")
    attempts: int
    last_error: str | None
    resend: bool = Field(description="sent once more on purpose by an operator")
    resend_id: int | None
    requested_at: Moment | None = Field(description="when it was queued (a resend: when it was asked for)")
    source: str | None = Field(description="a resend: who asked (api, admin or cli)")


class Booking(BookingSummary):
    emails: list[BookingEmail] = Field(description="the emails sent or being sent, oldest first")


class BookingsQuery(PageQuery):
    code: Annotated[str, Text(64)] | None = Field(
        None, description="the booking with this code (case and surrounding spaces ignored); an empty list if none"
    )


class Bookings(Page[BookingSummary]):
    pass


class ResendQueued(BaseModel):
    resend_id: int = Field(description="the resend's record (email_resends)")
    booking_id: int
    code: str
    kind: str
    status: str = Field(description="``pending``: queued, sent by the mailer once")
    requested_at: Moment


class PaymentNotification(BaseModel):
    """The gateway's HTTP notification (Midtrans format); other fields are allowed and ignored."""

    model_config = ConfigDict(extra="allow")

    order_id: str = Field(min_length=1, description="the booking's code")
    status_code: str = Field(min_length=1)
    gross_amount: str = Field(min_length=1)
    signature_key: str = Field(
        min_length=1, description="SHA-512 of order_id + status_code + gross_amount + server key"
    )
    transaction_status: str = Field(min_length=1)
    fraud_status: str | None = None
    transaction_id: str | None = None


class SimulatedPayment(BaseModel):
    code: Annotated[str, Text(64)] = Field(description="the booking's code")


class PaymentApplied(BaseModel):
    """What the gateway confirmed did to the booking."""

    id: int
    code: str
    status: str
    outcome: str
    duplicate: bool = Field(description="the same confirmed status was applied before; nothing changed")
