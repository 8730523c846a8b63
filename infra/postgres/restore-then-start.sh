#!/bin/sh
# The PostgreSQL role's entrypoint: when RESTORE_TARGET is set and the data directory is empty (a
# fresh volume), restore it from the pgBackRest repository first, then start the server as the
# image's own entrypoint does. A data directory that holds a cluster is never touched: a restore
# goes into a fresh volume (docs/backup.md, "Restore").
set -eu
data="${PGDATA:-/var/lib/postgresql/data}"
if [ -n "${RESTORE_TARGET:-}" ] && [ ! -s "$data/PG_VERSION" ]; then
    if [ "$RESTORE_TARGET" = latest ]; then
        echo "restore: from the repository to the end of its archived WAL"
        # Said outright: along the newest timeline (a restore that branched a new one since the
        # backup included), whatever pgBackRest's default for the backup it restores.
        pgbackrest --log-level-console=info restore \
            --target-timeline="${RESTORE_TIMELINE:-latest}"
    else
        echo "restore: from the repository to $RESTORE_TARGET"
        pgbackrest --log-level-console=info restore --type=time --target="$RESTORE_TARGET" \
            --target-timeline="${RESTORE_TIMELINE:-latest}" --target-action=promote
    fi
    # Connections wait for the end of recovery: the healthcheck (pg_isready) stays red until the
    # server is promoted, so nothing that depends on it starts on a half-replayed database.
    exec docker-entrypoint.sh "$@" -c hot_standby=off
elif [ -n "${RESTORE_TARGET:-}" ]; then
    echo "restore: $data already holds a cluster; nothing restored (a restore needs a fresh volume: postgresVolumeGeneration)"
fi
exec docker-entrypoint.sh "$@"
