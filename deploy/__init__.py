"""One way for the suites and the bench to bring a stack up and down, two implementations.

`deployer(stack)` is the only place that reads `DEPLOYER` (`make e2e DEPLOYER=pulumi`):

- `rehearsal` (the default): `python -m rehearsal up|down` on this machine's Docker engine
  (docs/rehearsal.md);
- `pulumi`: Pulumi's Automation API, a `LocalWorkspace` on this project and a real `pulumi up`
  (docs/rehearsal.md, "The deployers").
"""

from __future__ import annotations

import os

from deploy.automation import AutomationDeployer
from deploy.base import Deployed, Deployer, DeployError
from deploy.rehearsal import RehearsalDeployer

__all__ = ["DeployError", "Deployed", "Deployer", "deployer"]

DEPLOYERS: dict[str, type[Deployer]] = {
    "rehearsal": RehearsalDeployer,
    "pulumi": AutomationDeployer,
}


def deployer(stack: str, name: str | None = None, *, echo: bool = False) -> Deployer:
    """The deployer `DEPLOYER` names, for the stack files of `stack` (dev, prod, swarm, swarm3)
    under the stack name `name` (default `rehearsal-<stack>`). `echo`: show what it prints as it
    prints it (on stderr), besides keeping it."""
    kind = os.environ.get("DEPLOYER") or "rehearsal"
    if kind not in DEPLOYERS:
        raise DeployError(f"DEPLOYER={kind}: expected one of {', '.join(DEPLOYERS)}")
    return DEPLOYERS[kind](stack, name or f"rehearsal-{stack}", echo=echo)
