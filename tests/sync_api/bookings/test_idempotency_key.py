"""The ``Idempotency-Key`` header read and a body's fingerprint, in process (the routes: test_idempotency.py)."""

from __future__ import annotations

import pytest

from antrian.errors import InvalidInput
from sync_api.bookings.idempotency import IdempotencyKeyReused, parse_key, request_hash

#: Fast tier: in process, or offline (make test-fast).
pytestmark = pytest.mark.fast


def test_a_key_is_1_to_200_printable_ascii_characters():
    assert parse_key([]) is None
    for key in ("a", "order 42/retry~1", "!" * 200, "550e8400-e29b-41d4-a716-446655440000"):
        assert parse_key([key]) == key
    for values, words in (
        ([""], "must not be empty"),
        (["a" * 201], "at most 200"),
        (["kunci-é"], "printable ASCII"),
        (["a\tb"], "printable ASCII"),
        (["a\x7f"], "printable ASCII"),
        (["a", "b"], "one Idempotency-Key header, not 2"),
    ):
        with pytest.raises(InvalidInput, match=words):
            parse_key(values)


def test_the_fingerprint_is_of_the_parsed_body_not_its_spelling():
    body = {"tour_id": 1, "quantity": 2, "customer_name": "Budi", "nested": {"b": 1, "a": [1, 2]}}
    assert request_hash(body) == request_hash(dict(reversed(list(body.items()))))
    assert request_hash(body) == request_hash({**body, "nested": {"a": [1, 2], "b": 1}})
    assert request_hash(body) != request_hash({**body, "quantity": 3})
    assert request_hash(body) != request_hash({**body, "nested": {"b": 1, "a": [2, 1]}})
    assert request_hash({"name": "José\ud800"}) != request_hash({"name": "José"})  # any string, even a lone surrogate
    assert len(request_hash(body)) == 64


def test_a_reused_key_is_a_422():
    assert IdempotencyKeyReused.status == 422
    assert str(IdempotencyKeyReused("k1")).startswith('Idempotency-Key "k1" was used with a different request')
