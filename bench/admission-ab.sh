#!/usr/bin/env bash
# A/B of the admission limit's cost on the hot paths (RELIABILITY.md "Overload"): one uvicorn
# process, natively (no Docker), on the machine's PostgreSQL and Redis, from two copies of the same
# revision: A without the AdmissionLimit middleware (its `app.add_middleware(AdmissionLimit, ...)`
# taken out of app/main.py), B as it is. Alternating A, B, A, B..., `wrk -t2 -c32 -d10s` on
# GET /task/{id} of a finished job and on POST /process (bench/post.lua: a new item id per
# request). No worker: the messages pile up in a Redis db of its own, flushed at the end, like the
# database.
#   bash bench/admission-ab.sh [REVISION] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${1:-HEAD}
ROUNDS=${2:-3}
PORT=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
DB=taskstack_ab_$(date +%s)
REDIS_DB=14
A_TREE=$(mktemp -d)
B_TREE=$(mktemp -d)
git archive "$REV" app alembic alembic.ini | tar -x -C "$A_TREE"
git archive "$REV" app alembic alembic.ini | tar -x -C "$B_TREE"
python3 - "$A_TREE/app/main.py" <<'PATCH'
import re, sys
path = sys.argv[1]
text = open(path).read()
stripped = re.sub(r"app\.add_middleware\(\n    AdmissionLimit,.*?\n\)\n", "", text, flags=re.S)
assert stripped != text, "the AdmissionLimit registration was not found"
open(path, "w").write(stripped)
PATCH
PY=$PWD/.venv/bin/python
export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/$DB
export REDIS_URL=redis://127.0.0.1:6379/$REDIS_DB JOB_WORK_SECONDS=0
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
SERVER=
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"; redis-cli -n $REDIS_DB flushdb >/dev/null; rm -rf "$A_TREE" "$B_TREE"' EXIT
$PY -m alembic upgrade head >/dev/null 2>&1
TASK=$(psql -h 127.0.0.1 -U postgres -d "$DB" -qAtc "INSERT INTO jobs (id, item_id, kind, status, celery_task_id, progress, result, finished_at) VALUES (gen_random_uuid(), 1, 'process_data', 'succeeded', 'x', 100, '{\"item_id\": 1, \"status\": \"processed\"}', now()) RETURNING id")

run() {  # $1 label, $2 tree
  (cd "$2" && exec "$PY" -m uvicorn app.main:app --host 127.0.0.1 --port $PORT --no-access-log --log-level warning) &
  local pid=$!
  SERVER=$pid
  until curl -sf "http://127.0.0.1:$PORT/health" >/dev/null; do sleep 0.2; done
  local get post
  get=$(wrk -t2 -c32 -d10s "http://127.0.0.1:$PORT/task/$TASK" | awk '/Requests\/sec/ {print $2}')
  post=$(BENCH_LUA_DIR=$PWD/bench wrk -t2 -c32 -d10s -s bench/post.lua "http://127.0.0.1:$PORT" | awk '/Requests\/sec/ {print $2}')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  SERVER=
  echo "$1 GET /task $get req/s, POST /process $post req/s"
}
for _ in $(seq "$ROUNDS"); do run "A (no limit)" "$A_TREE"; run "B (limit)" "$B_TREE"; done
