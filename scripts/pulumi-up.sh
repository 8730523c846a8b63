#!/usr/bin/env bash
# Provision a stack (default: dev) with the Pulumi CLI against the local Docker engine.
# State stays on this machine (local backend) and secrets are encrypted with a passphrase: no Pulumi
# Cloud account. See docs/infra.md.
set -euo pipefail
cd "$(dirname "$0")/.."
STACK="${1:-dev}"

missing=0
if ! command -v pulumi >/dev/null 2>&1; then
    cat >&2 <<'MSG'
The Pulumi CLI is not installed. Install it (https://www.pulumi.com/docs/install/), e.g.
    curl -fsSL https://get.pulumi.com | sh
then open a new shell so that ~/.pulumi/bin is on PATH.
MSG
    missing=1
fi
if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    cat >&2 <<'MSG'
No Docker engine answers (`docker info` failed). Start Docker, or point DOCKER_HOST at an engine
(the program's docker provider uses the same setting: `pulumi config set docker:host ...`).
MSG
    missing=1
fi
if [ "$missing" -ne 0 ]; then
    exit 1
fi

# Local state backend, unless the user already chose one (PULUMI_BACKEND_URL or `pulumi login`).
if [ -z "${PULUMI_BACKEND_URL:-}" ] && ! pulumi whoami >/dev/null 2>&1; then
    mkdir -p .pulumi-state
    export PULUMI_BACKEND_URL="file://$PWD/.pulumi-state"
    echo "Using the local state backend $PULUMI_BACKEND_URL" >&2
fi
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    cat >&2 <<'MSG'
Set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets.
    export PULUMI_CONFIG_PASSPHRASE='<a passphrase you keep safe>'
MSG
    exit 1
fi

pulumi stack select --create "$STACK" --secrets-provider passphrase
pulumi up --yes --stack "$STACK"
pulumi stack output --stack "$STACK"
