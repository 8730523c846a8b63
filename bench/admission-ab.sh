#!/usr/bin/env bash
# A/B of the admission limit's cost on the hot paths (docs/bench.md, RELIABILITY.md "Overload"):
# one uvicorn process, natively (no Docker), on the machine's PostgreSQL and Redis, from two trees
# of the app: A = a git revision without the limit (default: the parent of its commit), B = the
# working tree. Alternating A, B, A, B..., `wrk -t2 -c32 -d10s` on GET /task/{id} of a finished job
# and on POST /process (bench/post.lua's a new item id per request). No worker: the messages pile
# up in a Redis db of its own, flushed at the end, like the database.
#   bash bench/admission-ab.sh [REVISION_A] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
A_REV=${1:-aa9bee2^}
ROUNDS=${2:-3}
PORT=18777
DB=taskstack_ab_$(date +%s)
REDIS_DB=14
A_TREE=$(mktemp -d)
git archive "$A_REV" app alembic alembic.ini | tar -x -C "$A_TREE"
PY=$PWD/.venv/bin/python
export DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/$DB
export REDIS_URL=redis://127.0.0.1:6379/$REDIS_DB JOB_WORK_SECONDS=0
psql -h 127.0.0.1 -U postgres -qc "CREATE DATABASE $DB"
SERVER=
trap '[ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)"; redis-cli -n $REDIS_DB flushdb >/dev/null; rm -rf "$A_TREE"' EXIT
$PY -m alembic upgrade head >/dev/null 2>&1
TASK=$(psql -h 127.0.0.1 -U postgres -d "$DB" -qAtc "INSERT INTO jobs (id, item_id, kind, status, celery_task_id, progress, result, finished_at) VALUES (gen_random_uuid(), 1, 'process_data', 'succeeded', 'x', 100, '{\"item_id\": 1, \"status\": \"processed\"}', now()) RETURNING id")

run() {  # $1 label, $2 tree
  (cd "$2" && exec "$PY" -m uvicorn app.main:app --port $PORT --no-access-log --log-level warning) &
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
for _ in $(seq "$ROUNDS"); do run "A ($A_REV)" "$A_TREE"; run "B (working tree)" "$PWD"; done
