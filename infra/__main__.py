"""The taskstack stack: configuration -> one description -> a target's resources -> outputs.

Pulumi runs this file with `infra/` as the working directory and on sys.path; the repository root is
put first so that the program and the tests import the same `infra.*` modules.
"""

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import pulumi  # noqa: E402

from infra.config import load_stack_config  # noqa: E402
from infra.outputs import export_outputs  # noqa: E402
from infra.spec import describe_stack  # noqa: E402
from infra.targets import render  # noqa: E402

# 1. Every taskstack:* key, validated before any resource is declared; credentials as secrets.
config, credentials = load_stack_config()
# 2. The stack, target-neutral: roles, images, commands, environment, health, hardening, ordering.
description = describe_stack(config, credentials, pulumi.get_stack(), REPO_ROOT)
# 3. Resources for the configured target: containers on one host (docker, the default) or
#    services on a swarm (swarm).
rendered = render(description)
# 4. Stack outputs: URLs, image, container names; connection strings as secrets.
export_outputs(description, rendered)
