"""Alembic environment: DATABASE_URL from the app's settings, migrations under an advisory lock."""

import logging
from logging.config import fileConfig

import psycopg
from sqlalchemy import create_engine, pool, text

from alembic import context
from app.config import get_settings
from app.logs import configure_logging
from app.storage import api_keys
from app.storage.models import Base
from app.storage.roles import MIGRATION_LOCK_KEY, ensure_app_role

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
    # alembic.ini's levels, our handler (app/logs.py: LOG_FORMAT, passwords masked).
    configure_logging("migrate", level=logging.getLogger().level, exclusive=True)

target_metadata = Base.metadata


def run_migrations_offline() -> None:
    context.configure(
        url=get_settings().database_url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    settings = get_settings()
    if settings.admin_database_url is not None:
        # The stack's migration: first the app's own role and schema, as the administrator; then
        # the migrations as that role, so that it owns what they create (docs/infra.md).
        ensure_app_role(settings.admin_database_url.get_secret_value(), settings.database_url)
    engine = create_engine(settings.database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Several migrate containers may start at once: the others wait here, then find the
        # schema already at head and do nothing.
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            context.configure(connection=connection, target_metadata=target_metadata)
            with context.begin_transaction():
                context.run_migrations()
            if settings.initial_api_key is not None and context.get_head_revision() == (
                context.get_context().get_current_revision()
            ):
                # The key given as a secret (INITIAL_API_KEY), stored hashed as `initial`; the
                # same value again changes nothing (app/storage/api_keys.py).
                with psycopg.connect(settings.database_libpq_url) as keys:
                    api_keys.upsert_initial(keys, settings.initial_api_key.get_secret_value())
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
