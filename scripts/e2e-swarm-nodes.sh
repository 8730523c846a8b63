#!/usr/bin/env bash
# `make e2e-swarm NODES=N` (docs/swarm.md, "Three nodes"): the swarm rehearsal on N Docker-in-Docker
# nodes. Starts the nodes (../shared/offline-docker/swarm-nodes), sets the swarm up as an operator
# would (dispatcher heartbeat, node labels for PostgreSQL and Redis), runs tests/e2e_nodes against
# the manager through DOCKER_HOST, and removes the nodes whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:?usage: e2e-swarm-nodes.sh NODES [pytest options, e.g. -k losing -s]}
shift
UV=${UV:-uv}
if ! [[ $count =~ ^[0-9]+$ ]] || [ "$count" -lt 3 ]; then
  echo "NODES=$count: the multi-node run needs 3 nodes or more (make e2e-swarm without NODES runs" \
    "the single-node swarm)" >&2
  exit 2
fi
swarm_nodes=$(cd .. && pwd)/shared/offline-docker/swarm-nodes
if [ ! -x "$swarm_nodes" ]; then
  echo "missing $swarm_nodes: the nodes come from ../shared/offline-docker (docs/swarm.md)" >&2
  exit 1
fi
# The engine that runs the node containers; DOCKER_HOST is pointed at their manager below.
unset DOCKER_HOST
docker_cli=/usr/bin/docker
local_engine=unix:///var/run/docker.sock
# Nodes cannot pull: every image the stack runs besides the app's (the *Image defaults of
# Pulumi.yaml, e.g. postgres:17, redis:8) is loaded into each node when it starts.
images=$($UV run python -c '
import yaml
declared = yaml.safe_load(open("Pulumi.yaml"))["config"]
loaded = {"python:3.13-slim", "postgres:17", "redis:8"}  # swarm-nodes up loads these anyway
wanted = {v["default"] for k, v in declared.items() if k.endswith("Image") and v.get("default")}
print(" ".join(sorted(wanted - loaded)))
')

manager=""
cleanup() {
  local rc=$?
  if [ -n "$manager" ]; then
    # The deployer DEPLOYER names (deploy/), as the suite's own teardown.
    DOCKER_HOST=$manager $UV run python -c \
      'from deploy import deployer; deployer("swarm3", echo=True).down(volumes=True)' >&2 || true
  fi
  DOCKER_HOST=$local_engine "$swarm_nodes" down || true
  exit "$rc"
}
trap cleanup EXIT

started=$(date +%s)
"$swarm_nodes" up "$count" $images >&2
manager=$("$swarm_nodes" env | sed -n 's/^export DOCKER_HOST=\([^ ]*\).*/\1/p')
export DOCKER_HOST=$manager
# The other nodes get each image the program builds on the manager (rehearsal/nodes.py).
REHEARSAL_IMAGE_NODES=$("$docker_cli" -H "$local_engine" ps --filter label=swarm-nodes \
  --format '{{.Names}}' | sort | tr '\n' ' ')
export REHEARSAL_IMAGE_NODES
# Faster failover, a swarm-level setting the provider has no resource for: applied on a manager
# (docs/swarm.md, "Heartbeat and rescheduling").
"$docker_cli" swarm update --dispatcher-heartbeat 1s >/dev/null
# Where PostgreSQL, Redis and the backup repository live (their volumes are node-local): node2,
# and node1 (the manager) for both others; node3 carries none, the node the node-loss tests lose
# first, and the one PostgreSQL is restored on when node2 is lost with its disk.
"$docker_cli" node update --label-add taskstack.postgres=true swarm-node2 >/dev/null
"$docker_cli" node update --label-add taskstack.redis=true swarm-node1 >/dev/null
"$docker_cli" node update --label-add taskstack.backup=true swarm-node1 >/dev/null
$UV run python -m rehearsal check
$UV run pytest --durations=10 tests/e2e_nodes "$@"
echo "e2e-swarm NODES=$count: $(($(date +%s) - started)) s (nodes up to nodes down)" >&2
