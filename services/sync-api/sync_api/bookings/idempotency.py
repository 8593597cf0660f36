"""``Idempotency-Key``: a retried request answers its first answer again instead of doing its work twice.

When ``POST /api/bookings`` commits but its answer is lost (a pod killed, a dropped connection), the
client retries. With the same ``Idempotency-Key`` header (the convention of payment APIs) the retry
gets the first answer again, with ``Idempotent-Replayed: true``, and takes no seats and queues no
invoice. The same key with another body is a ``422``.

Everything lives in PostgreSQL (``idempotency_keys``), nothing in process memory: sync-api runs as
several processes on several hosts. In **one transaction** :func:`once`

1. forgets this key if it is older than :data:`KEEP` (24 hours: the same key then does its work anew);
2. claims the key: ``INSERT … ON CONFLICT DO NOTHING RETURNING id``. A concurrent request with the
   same key waits on the unique index until the first transaction ends: it then conflicts (the
   first committed) and reads the stored answer, or claims the key itself (the first rolled back);
3. does the work (the booking) on the same transaction and stores its answer on the key's row.

So the key and its booking commit together or not at all, and exactly one booking is made per key.

**What is remembered: only work that committed.** A request that fails (``400`` invalid body, ``404``
unknown tour, ``409`` not enough seats, a ``5xx``) changed nothing; its transaction rolls back, the
key's row with it, and a retry with that key is decided afresh. Stripe also replays a validation
``4xx``; we do not, because (a) here the key's row exists if and only if its work committed, with no
second write path for failures that would itself have to survive a crash; (b) a failure changed
nothing, so deciding a retry afresh cannot double anything; (c) a retry after a ``409`` may succeed
once seats have come back (an unpaid booking expired), which is what a client retrying wants.

Expired keys are deleted for the key at hand (step 1) and, after about one claim in
:data:`PRUNE_ONE_IN`, in bulk: up to :data:`PRUNE_BATCH` of the oldest, skipping rows a claim holds.
That deletes far more rows than claims insert, so the table holds about one day of keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from antrian.db.models import IdempotencyKey
from antrian.errors import AntrianError, Conflict, InvalidInput

logger = logging.getLogger(__name__)

#: The request header, and the header that marks a replayed answer.
HEADER, REPLAYED_HEADER = "Idempotency-Key", "Idempotent-Replayed"
MAX_KEY_LENGTH = 200
#: Printable ASCII, space to tilde.
KEY_CHARACTERS = re.compile(r"[\x20-\x7e]+")
#: How long a key is remembered.
KEEP = timedelta(hours=24)
#: About one claim in this many also deletes a batch of expired keys.
PRUNE_ONE_IN, PRUNE_BATCH = 100, 1_000
#: Claims tried before giving up: a key is only claimed again after a rollback or an expiry between two statements.
CLAIM_ATTEMPTS = 3


class IdempotencyKeyReused(AntrianError):
    """Raised when an ``Idempotency-Key`` comes back with a different request than the one it was first sent with."""

    status = 422

    def __init__(self, key: str) -> None:
        super().__init__(
            f'Idempotency-Key "{key}" was used with a different request; send a new key for a new request'
        )


@dataclass(frozen=True)
class Answer:
    """A route's answer: its status and JSON body, and whether it is a stored first answer replayed."""

    status: int
    body: dict[str, Any]
    replayed: bool = False


def parse_key(values: list[str]) -> str | None:
    """The key from the request's ``Idempotency-Key`` headers: ``None`` without one; a 400 when it is unusable."""
    if not values:
        return None
    if len(values) > 1:
        raise InvalidInput(f"send one {HEADER} header, not {len(values)}")
    key = values[0]
    if not key:
        raise InvalidInput(f"{HEADER} must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"{HEADER} must be at most {MAX_KEY_LENGTH} characters")
    if not KEY_CHARACTERS.fullmatch(key):
        raise InvalidInput(f"{HEADER} must be printable ASCII characters only")
    return key


def request_hash(body: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of a parsed body: keys sorted, no spaces, ASCII only."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def once(
    engine: Engine, *, route: str, key: str, body: Any, work: Callable[[Connection], Answer], caller: str = ""
) -> Answer:
    """``work``'s answer, done once per ``(route, caller, key)`` within :data:`KEEP`; a repeat gets it replayed.

    ``work`` runs on the transaction that claims the key, and must do everything it changes on that
    connection; an exception it raises rolls back its changes and the claim alike. ``caller`` is the
    operator's name (a token's), so that two clients' keys never meet. Raises :class:`IdempotencyKeyReused`
    for the same key with another ``body``.
    """
    fingerprint = request_hash(body)
    this_key = (
        (IdempotencyKey.route == route) & (IdempotencyKey.caller == caller) & (IdempotencyKey.key == key)
    )
    claim = (
        insert(IdempotencyKey)
        .values(route=route, caller=caller, key=key, request_hash=fingerprint)
        .on_conflict_do_nothing(index_elements=["route", "caller", "key"])
        .returning(IdempotencyKey.id)
    )
    for _ in range(CLAIM_ATTEMPTS):
        stored = None
        with engine.begin() as connection:
            connection.execute(delete(IdempotencyKey).where(this_key, IdempotencyKey.created_at < func.now() - KEEP))
            claimed = connection.execute(claim).scalar_one_or_none()
            if claimed is not None:
                answer = work(connection)
                connection.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.id == claimed)
                    .values(response_status=answer.status, response_body=answer.body)
                )
            else:
                stored = connection.execute(
                    select(IdempotencyKey.request_hash, IdempotencyKey.response_status, IdempotencyKey.response_body)
                    .where(this_key, IdempotencyKey.created_at >= func.now() - KEEP)
                ).one_or_none()
        if claimed is not None:
            if random.randrange(PRUNE_ONE_IN) == 0:
                prune(engine)
            return answer
        # No stored answer: the key expired (or a rolled-back claim brought an expired row back) in between.
        if stored is not None and stored.response_status is not None:
            if stored.request_hash != fingerprint:
                raise IdempotencyKeyReused(key)
            return Answer(stored.response_status, stored.response_body, replayed=True)
    raise Conflict(f"{HEADER} \"{key}\" is being claimed by another request; try again")


def prune(engine: Engine) -> int:
    """Delete up to :data:`PRUNE_BATCH` of the oldest expired keys; a failure is logged, never raised."""
    expired = (
        select(IdempotencyKey.id)
        .where(IdempotencyKey.created_at < func.now() - KEEP)
        .order_by(IdempotencyKey.created_at)
        .limit(PRUNE_BATCH)
        .with_for_update(skip_locked=True)
    )
    try:
        with engine.begin() as connection:
            deleted = connection.execute(delete(IdempotencyKey).where(IdempotencyKey.id.in_(expired))).rowcount
    except SQLAlchemyError as exc:  # the request's own work is done and committed: only log
        logger.warning("pruning expired idempotency keys failed: %s", exc)
        return 0
    if deleted:
        logger.info("expired idempotency keys deleted", extra={"deleted": deleted})
    return deleted
