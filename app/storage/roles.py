"""The app's PostgreSQL role: a login that owns its schema and nothing more.

The migration makes it (`alembic/env.py`, when `ADMIN_DATABASE_URL` is set), connected as the
administrator PostgreSQL was initialised with; the migrations themselves then run as the app role
(`DATABASE_URL`), so every table belongs to it. Its name, password and database are read from
`DATABASE_URL`. The role is not a superuser and cannot create databases, roles or replication
connections; its schema is named after it, which PostgreSQL's default `search_path`
(`"$user", public`) puts first, so the app's unqualified names resolve there. Safe to run on every
migration: the role is created or brought back to exactly these attributes and this password.
"""

import base64
import hashlib
import hmac
import secrets

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

# Any fixed 64-bit number, the same for every migration run against a database (alembic/env.py
# holds it around the migrations, the role step here around its own): concurrent runs wait.
MIGRATION_LOCK_KEY = 7_311_020_001
ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT"
SCRAM_ITERATIONS = 4096


class AppRoleError(RuntimeError):
    """The app role cannot be made as asked; the message says why and what to do."""


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677).

    Sent instead of the password, so that a statement PostgreSQL logs (on an error, or with
    `log_statement`) never shows it."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _libpq(url: str) -> str:
    return "postgresql://" + url.split("://", 1)[1]


def ensure_app_role(admin_url: str, app_url: str) -> str:
    """Create or update the role `app_url` names, with its password, and its own schema, connected
    through `admin_url`; returns the role's name."""
    app = make_url(app_url)
    role, password, database = app.username, app.password, app.database
    if not role or not database:
        raise AppRoleError("DATABASE_URL must name the app's role and database")
    admin = make_url(admin_url)
    if role == admin.username:
        raise AppRoleError(
            f"DATABASE_URL and ADMIN_DATABASE_URL both connect as {role}: the app would run as "
            "the administrator; give the app a role of its own"
        )
    with psycopg.connect(_libpq(admin_url)) as connection:
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        found = connection.execute(
            "SELECT oid = 10 FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
        if found is not None and found[0]:
            raise AppRoleError(
                f"{role} is the superuser this PostgreSQL was initialised with and cannot be "
                "demoted; see docs/infra.md, 'Database roles', for moving an older stack over"
            )
        verb = sql.SQL("ALTER" if found is not None else "CREATE")
        statement = (
            sql.SQL("{} ROLE {} WITH {} PASSWORD {}").format(
                verb,
                sql.Identifier(role),
                sql.SQL(ATTRIBUTES),
                sql.Literal(scram_verifier(password)),
            )
            if password
            else sql.SQL("{} ROLE {} WITH {}").format(
                verb, sql.Identifier(role), sql.SQL(ATTRIBUTES)
            )
        )
        connection.execute(statement)
        connection.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {} AUTHORIZATION {}").format(
                sql.Identifier(role), sql.Identifier(role)
            )
        )
        connection.execute(
            sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(
                sql.Identifier(role), sql.Identifier(role)
            )
        )
        connection.execute(
            sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(role)
            )
        )
        # Read-only statistics: the WAL waiting to be archived (pg_ls_archive_statusdir), which
        # /metrics reports (docs/backup.md).
        connection.execute(sql.SQL("GRANT pg_monitor TO {}").format(sql.Identifier(role)))
    return role
