#!/bin/sh
# With a repository host (docs/backup.md): pgBackRest refuses a TLS key that group or others may
# read, and a mounted secret file may be world-readable (the docker target's are). So the key is
# copied from TLS_KEY_SOURCE to TLS_KEY_FILE on the private /tmp, readable by this user only,
# before the command runs.
set -eu
if [ -n "${TLS_KEY_SOURCE:-}" ]; then
    install -m 600 "$TLS_KEY_SOURCE" "$TLS_KEY_FILE"
fi
exec "$@"
