"""Idempotency-Key: a retried request returns what the first one was answered and creates nothing.

The key is recorded in the same statement (so the same transaction) as what the request creates:
if the first request's row is committed, so is its key, also when its client never got the answer
(the connection dropped after the commit). A second request with the key finds the record and is
answered the same task id and status code; a request with a used key but another method, path or
body is refused (422), since answering it with the first request's task would be a lie. Records
are kept `IDEMPOTENCY_KEY_RETENTION_HOURS`, then purged with the finished jobs
(`app.tasks.purge_finished_jobs`).

Keys are each client's own (app/api/clients.py): a record is found by (client id, key), so two
clients that happen to send the same key never see each other's task, nor a 422 for it.
"""

import hashlib
import uuid
from dataclasses import dataclass
from typing import Annotated

import asyncpg
from fastapi import Header

from app.metrics.api import IDEMPOTENT_REPLAYS

# Printable ASCII without spaces, as the IETF draft's examples and the big APIs' keys (UUIDs).
KEY_PATTERN = r"^[!-~]{1,255}$"

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=KEY_PATTERN,
        description="Retry safely: the same key returns the first answer and creates nothing "
        "new (1 to 255 printable ASCII characters, e.g. a UUID). A key reused with another "
        "request is a 422.",
    ),
]

LOOKUP = """
SELECT client_id, key, fingerprint, task_id, status_code FROM idempotency_keys
WHERE (client_id, key) IN (SELECT * FROM unnest($1::integer[], $2::text[]))
"""


class IdempotencyKeyReused(Exception):
    """The key was first sent with another request."""

    def __init__(self, key: str) -> None:
        super().__init__(
            f"Idempotency-Key {key!r} was already used with a different request "
            "(method, path or body); use a new key for a new request"
        )


@dataclass(frozen=True)
class Recorded:
    """What a key's first request was answered."""

    fingerprint: bytes
    task_id: uuid.UUID
    status_code: int


def fingerprint(method: str, path: str, body: bytes = b"") -> bytes:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


async def recorded(
    connection: asyncpg.Connection, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], Recorded]:
    """The records of these (client id, key) pairs."""
    rows = await connection.fetch(
        LOOKUP, [client_id for client_id, _ in keys], [key for _, key in keys]
    )
    return {
        (row["client_id"], row["key"]): Recorded(
            bytes(row["fingerprint"]), row["task_id"], row["status_code"]
        )
        for row in rows
    }


def replay(key: str, request_fingerprint: bytes, record: Recorded | None) -> uuid.UUID:
    """The first request's task id for a repeat of it; raises for a key used otherwise."""
    if record is None:  # purged between the INSERT and this read: vanishingly rare
        raise RuntimeError(f"Idempotency-Key {key!r} disappeared while it was being read")
    if record.fingerprint != request_fingerprint:
        raise IdempotencyKeyReused(key)
    IDEMPOTENT_REPLAYS.inc()
    return record.task_id
