#!/bin/sh
# The backup role (docs/backup.md): pgBackRest's stanza made once, then every BACKUP_CHECK_SECONDS
# a full backup when there is none or the last one is older than BACKUP_FULL_INTERVAL_HOURS, a
# differential when the newest backup of any kind is older than BACKUP_DIFF_INTERVAL_HOURS, and
# pgBackRest's own `verify` after each full one. What the repository holds is written to the
# backup_status table each round: the API's /metrics reads it (docs/observability.md).
# pgBackRest's settings come from PGBACKREST_* variables; psql's from PGHOST/PGUSER/PGDATABASE.
# On a repository host (PGBACKREST_TLS_SERVER_ADDRESS set) it also runs pgBackRest's TLS server,
# which PostgreSQL pushes WAL to, and reaches PostgreSQL over the network with the password in
# PGPASSWORD_FILE.
set -u
log() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) backup $*"; }

if [ -n "${PGPASSWORD_FILE:-}" ]; then
    PGPASSWORD=$(cat "$PGPASSWORD_FILE")
    export PGPASSWORD
fi
if [ -n "${PGBACKREST_TLS_SERVER_ADDRESS:-}" ]; then
    # Restarted if it ever exits; the healthcheck pings it.
    (while :; do pgbackrest server; log "TLS server exited; restarting"; sleep 1; done) &
fi

until pg_isready -q; do sleep 2; done
# stanza-create is idempotent: it checks an existing stanza against this cluster.
until pgbackrest stanza-create; do
    log "stanza-create failed; trying again in 10 s"
    sleep 10
done
pgbackrest check || log "check failed: is archive_command pushing WAL?"

while :; do
    if info=$(pgbackrest info --output=json); then
        size=$(du -sb "${PGBACKREST_REPO1_PATH:-/var/lib/pgbackrest}" | cut -f1)
        due=$(psql -XAtq -v ON_ERROR_STOP=1 -v info="$info" -v repository_bytes="$size" \
            -v full_hours="$BACKUP_FULL_INTERVAL_HOURS" -v diff_hours="$BACKUP_DIFF_INTERVAL_HOURS" -v schema="$APP_SCHEMA" \
            -f /usr/local/share/taskstack/backup-due.sql) || due=""
        if [ -n "$due" ]; then
            log "$due backup starting"
            if pgbackrest --log-level-console=warn backup --type="$due"; then
                log "$due backup done"
                if [ "$due" = full ]; then
                    pgbackrest --log-level-console=warn verify && log "verify passed" \
                        || log "verify FAILED"
                fi
                continue  # record it at once
            fi
            log "$due backup FAILED"
        fi
    else
        log "pgbackrest info failed"
    fi
    sleep "$BACKUP_CHECK_SECONDS"
done
