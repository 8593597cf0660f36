"""Message contracts: what a producer sends is what Dramatiq's consumer decodes."""

from __future__ import annotations

import dramatiq
import pytest

from antrian.messages import SYNC_STUDENT_PAYMENT

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def test_encode_is_what_dramatiq_would_send():
    fast = dramatiq.Message.decode(SYNC_STUDENT_PAYMENT.encode(1000001, 7))
    slow = dramatiq.Message.decode(SYNC_STUDENT_PAYMENT.message(1000001, 7).encode())
    assert fast.asdict().keys() == slow.asdict().keys()
    for field in ("queue_name", "actor_name", "args", "kwargs", "options"):
        assert getattr(fast, field) == getattr(slow, field)
    assert fast.queue_name == "sync-pembayaran" and fast.actor_name == "sync_student_payment"
    assert fast.args == (1000001, 7)
    again = dramatiq.Message.decode(SYNC_STUDENT_PAYMENT.encode(1000001, 7))
    assert fast.message_id != again.message_id  # a new id every time
    assert abs(fast.message_timestamp - slow.message_timestamp) < 5000
