#!/usr/bin/env bash
# Tear a stack (default: dev) down. In prod the data volumes are retained on the host
# (retain_on_delete); docs/infra.md says how to delete them for real.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK="${1:-dev}"

if ! command -v pulumi >/dev/null 2>&1; then
    echo "The Pulumi CLI is not installed (https://www.pulumi.com/docs/install/); nothing to do." >&2
    exit 1
fi
if [ -z "${PULUMI_BACKEND_URL:-}" ] && ! pulumi whoami >/dev/null 2>&1; then
    export PULUMI_BACKEND_URL="file://$PWD/.pulumi-state"
fi
pulumi destroy --yes --stack "$STACK"
if [ "$STACK" = "prod" ]; then
    echo "The prod data volumes were kept: docker volume ls --filter label=com.taskstack.stack=prod" >&2
fi
