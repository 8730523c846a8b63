"""The stack's credentials as Swarm secrets (pulumi_docker 5.x `Secret`), for the swarm target.

Provider behaviour (kreuzwerker/terraform-provider-docker v4 `resource_docker_secret.go`, the code
pulumi-docker 5.x bridges): `data` is base64 (decoded with StdEncoding) and, like `name`, forces a
new secret; Docker refuses to delete a secret a service still uses. The name is left to Pulumi's
auto-naming (pulumi-docker's `provider/resources.go`: `SetAutonaming`), which gives a replacement a
fresh name, so the default create-before-replace works: new secret, services updated to it, old
secret deleted. A name derived from the value would put a digest of a credential in plain state.
"""

from __future__ import annotations

import base64
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.config import StackConfigError
from infra.spec import SecretKey
from infra.targets import core

# Swarm refuses a secret name over 64 characters; Pulumi's auto-naming adds "-" and 7 characters.
SWARM_NAME_MAX = 64
AUTO_NAME_SUFFIX = 8


def secret_name(prefix: str, key: SecretKey) -> str:
    return f"{prefix}-{key.replace('_', '-')}"


def check_secret_names(prefix: str, stack: str, keys: Collection[SecretKey]) -> None:
    """Refuse, before any resource, a stack name that makes a secret's name too long for Swarm
    (the engine's own error comes mid-`up`, after the images are built)."""
    longest = max((secret_name(prefix, key) for key in keys), key=len, default="")
    over = len(longest) + AUTO_NAME_SUFFIX - SWARM_NAME_MAX
    if over > 0:
        raise StackConfigError(
            f"the stack name {stack!r} is too long for a swarm: the secret {longest}-<7 "
            f"characters> would be over {SWARM_NAME_MAX} characters, which Swarm refuses; use a "
            f"stack name of at most {len(stack) - over} characters (pulumi stack rename)"
        )


@dataclass(frozen=True)
class SecretsArgs:
    """`values`: each credential (a secret Output). `name_prefix`: the Swarm secrets' names start
    with it (`<prefix>-<key>-<random>`), so that `docker secret ls` tells stacks apart."""

    values: Mapping[SecretKey, pulumi.Input[str]]
    name_prefix: str
    labels: Mapping[str, str]


class Secrets(core.Component):
    """Every credential of the stack as a Swarm secret; its value only ever a Pulumi secret."""

    def __init__(
        self,
        name: str,
        args: SecretsArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        type_prefix: str,
    ) -> None:
        super().__init__(f"{type_prefix}:Secrets", name, opts)
        self.by_key: dict[SecretKey, docker.Secret] = {}
        for key, value in sorted(args.values.items()):
            self.by_key[key] = docker.Secret(
                # No `name`: Pulumi auto-names it from this plus a random suffix, and a replacement
                # (a new value) gets a new suffix, so the new secret exists next to the old one
                # while the services move over (module docstring).
                secret_name(args.name_prefix, key),
                docker.SecretArgs(
                    data=pulumi.Output.secret(value).apply(
                        lambda v: base64.b64encode(v.encode()).decode()
                    ),
                    labels=core.label_args(docker.SecretLabelArgs, args.labels),
                ),
                opts=self.child_options(),
            )
        self.register_outputs({key: s.id for key, s in self.by_key.items()})
