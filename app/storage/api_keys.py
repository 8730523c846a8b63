"""API keys in PostgreSQL: made, listed and revoked by the operator (`python -m app.keys`), read by
each API process (app/api/auth.py).

A key is `tsk_` and 43 URL-safe characters (256 random bits), shown once when it is made. Only its
SHA-256 is stored, with its first PREFIX_LENGTH characters, which are not secret: they list it
and find the record a presented key is compared with. A plain hash is right for a key this random
(there is no dictionary to try, so nothing for a slow or salted hash to slow down), and the API
compares hashes in constant time. A key is revoked, never deleted: its jobs keep their owner.
"""

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import psycopg
from psycopg.rows import class_row

KEY_PREFIX = "tsk_"
PREFIX_LENGTH = 12
# The key the migration stores from the INITIAL_API_KEY setting.
INITIAL_KEY_NAME = "initial"
MAX_NAME_LENGTH = 100


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def key_prefix(key: str) -> str:
    return key[:PREFIX_LENGTH]


@dataclass(frozen=True)
class ApiKeyRecord:
    """A key as `list` shows it: everything but its hash."""

    id: int
    name: str
    prefix: str
    rate_per_second: float | None
    burst: int | None
    max_concurrent: int | None
    created_at: datetime
    revoked_at: datetime | None


class KeyNameTaken(Exception):
    """Another key (revoked or not) already has this name."""


RECORD_COLUMNS = "id, name, prefix, rate_per_second, burst, max_concurrent, created_at, revoked_at"
INSERT = f"""
INSERT INTO api_keys (name, prefix, key_hash, rate_per_second, burst, max_concurrent)
VALUES (%s, %s, %s, %s, %s, %s)
RETURNING {RECORD_COLUMNS}
"""  # noqa: S608 - the column list is this module's constant
# A key revoked earlier keeps the moment it was first revoked.
REVOKE = f"""
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE {{}} = %s
RETURNING {RECORD_COLUMNS}
"""  # noqa: S608
# The initial key: made once; a new value replaces the old (which stops working) and is active
# again; the same value changes nothing, so a revocation stands until the value is changed.
UPSERT_INITIAL = """
INSERT INTO api_keys (name, prefix, key_hash) VALUES (%s, %s, %s)
ON CONFLICT (name) DO UPDATE SET
    prefix = excluded.prefix, key_hash = excluded.key_hash, revoked_at = NULL,
    created_at = now()
WHERE api_keys.key_hash <> excluded.key_hash
"""
# What the API keeps of every usable key.
SELECT_ACTIVE = """
SELECT id, prefix, key_hash, rate_per_second, burst, max_concurrent
FROM api_keys WHERE revoked_at IS NULL
"""


def create(
    connection: psycopg.Connection[Any],
    name: str,
    *,
    rate_per_second: float | None = None,
    burst: int | None = None,
    max_concurrent: int | None = None,
) -> tuple[ApiKeyRecord, str]:
    """A new key named `name`, stored hashed; returns its record and the key itself, the one
    time it is known."""
    key = new_key()
    try:
        with connection.cursor(row_factory=class_row(ApiKeyRecord)) as cursor:
            cursor.execute(
                INSERT,
                (name, key_prefix(key), key_hash(key), rate_per_second, burst, max_concurrent),
            )
            record = cursor.fetchone()
    except psycopg.errors.UniqueViolation as error:
        raise KeyNameTaken(f"a key named {name!r} exists already") from error
    assert record is not None
    return record, key


def list_keys(connection: psycopg.Connection[Any]) -> list[ApiKeyRecord]:
    with connection.cursor(row_factory=class_row(ApiKeyRecord)) as cursor:
        cursor.execute(f"SELECT {RECORD_COLUMNS} FROM api_keys ORDER BY id")  # noqa: S608
        return cursor.fetchall()


def revoke(connection: psycopg.Connection[Any], name_or_id: str) -> ApiKeyRecord | None:
    """Revoke the key of this name, or else of this id; None when there is none."""
    with connection.cursor(row_factory=class_row(ApiKeyRecord)) as cursor:
        cursor.execute(REVOKE.format("name"), (name_or_id,))
        record = cursor.fetchone()
        if record is None and name_or_id.isdigit():
            cursor.execute(REVOKE.format("id"), (int(name_or_id),))
            record = cursor.fetchone()
    return record


def upsert_initial(connection: psycopg.Connection[Any], key: str) -> None:
    """Store `key` as the key named `initial` (see UPSERT_INITIAL); safe to run on every
    migration."""
    connection.execute(UPSERT_INITIAL, (INITIAL_KEY_NAME, key_prefix(key), key_hash(key)))


@dataclass(frozen=True)
class ActiveKey:
    """A usable key as the API keeps it; limits None where the key has none of its own."""

    id: int
    prefix: str
    key_hash: bytes = field(repr=False)  # never in a log line, not even the hash
    rate_per_second: float | None
    burst: int | None
    max_concurrent: int | None


async def active_keys(connection: asyncpg.Connection) -> list[ActiveKey]:
    rows = await connection.fetch(SELECT_ACTIVE)
    return [
        ActiveKey(
            row["id"],
            row["prefix"],
            bytes(row["key_hash"]),
            row["rate_per_second"],
            row["burst"],
            row["max_concurrent"],
        )
        for row in rows
    ]
