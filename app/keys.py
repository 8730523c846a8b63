"""The operator's command for API keys, run where the app runs (it needs the database only):

    python -m app.keys create NAME [--rate-per-second R] [--burst B] [--max-concurrent C]
    python -m app.keys list
    python -m app.keys revoke NAME|ID

`create` prints the key once, on its own line; nothing keeps it but its hash. Limits left out are
the settings' defaults (`API_KEY_RATE_PER_SECOND`, `API_KEY_BURST`, `API_KEY_MAX_CONCURRENT`),
read by the API when it uses the key. Every API process sees a new or revoked key within
`API_KEY_CACHE_SECONDS`, without a restart (app/api/auth.py).
"""

import argparse
import sys
from collections.abc import Sequence

import psycopg

from app.config import load_settings
from app.storage import api_keys
from app.storage.api_keys import ApiKeyRecord


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m app.keys", description="Manage API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key and print it (once)")
    create.add_argument("name", help=f"1 to {api_keys.MAX_NAME_LENGTH} characters, unique")
    create.add_argument("--rate-per-second", type=_positive(float), metavar="R")
    create.add_argument("--burst", type=_positive(int), metavar="B")
    create.add_argument("--max-concurrent", type=_positive(int), metavar="C")
    commands.add_parser("list", help="every key: id, name, prefix, limits, created, revoked")
    revoke = commands.add_parser("revoke", help="revoke a key by name, or else by id")
    revoke.add_argument("key", metavar="NAME|ID")
    return parser


def _positive(kind: type[int] | type[float]) -> "argparse._ActionType":
    def parse(text: str) -> int | float:
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its message
    return parse


def _limit(value: float | int | None) -> str:
    return "default" if value is None else f"{value:g}"


def _row(record: ApiKeyRecord) -> str:
    revoked = record.revoked_at.isoformat(timespec="seconds") if record.revoked_at else "-"
    return "\t".join(
        (
            str(record.id),
            record.name,
            record.prefix + "…",
            _limit(record.rate_per_second),
            _limit(record.burst),
            _limit(record.max_concurrent),
            record.created_at.isoformat(timespec="seconds"),
            revoked,
        )
    )


HEADER = "id\tname\tprefix\trate_per_second\tburst\tmax_concurrent\tcreated_at\trevoked_at"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _parser().parse_args(argv)
    settings = load_settings()
    with psycopg.connect(settings.database_libpq_url, autocommit=True) as connection:
        if arguments.command == "create":
            name: str = arguments.name
            if not 1 <= len(name) <= api_keys.MAX_NAME_LENGTH or not name.isprintable():
                print(f"invalid name {name!r}", file=sys.stderr)
                return 2
            try:
                record, key = api_keys.create(
                    connection,
                    name,
                    rate_per_second=arguments.rate_per_second,
                    burst=arguments.burst,
                    max_concurrent=arguments.max_concurrent,
                )
            except api_keys.KeyNameTaken as error:
                print(error, file=sys.stderr)
                return 1
            print(
                f"created key {record.id} {record.name!r}; it is shown once, keep it now:",
                file=sys.stderr,
            )
            print(key)
        elif arguments.command == "list":
            print(HEADER)
            for record in api_keys.list_keys(connection):
                print(_row(record))
        else:
            revoked = api_keys.revoke(connection, arguments.key)
            if revoked is None:
                print(f"no key named or numbered {arguments.key!r}", file=sys.stderr)
                return 1
            print(_row(revoked))
    return 0


if __name__ == "__main__":
    sys.exit(main())
