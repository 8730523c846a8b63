"""What the components of both targets share: option merging, names, the app image.

Each component takes a small frozen Args dataclass of what it uses (Inputs, or plain description
values) and an optional `opts`. Its own identity (parent, aliases, URN, import) stays its own; the
rest of `opts` (depends_on, protect, retain_on_delete, custom timeouts, ...) is merged into every
child it declares, and each child's name is derived from the component's name. A caller that
renames a component passes `pulumi.Alias(name=<old name>)` in `opts`: children's URNs carry their
parent's type, not its name, so they keep theirs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import pulumi
import pulumi_docker as docker

from infra.spec import REPLICA

# What names the component itself: never handed down to a child. Transformations and transforms
# are inherited from the parent by Pulumi already; handing them down would apply them twice.
_OWN = ("parent", "aliases", "urn", "id", "import_", "transformations", "transforms")


def renamed(previous: str | None) -> pulumi.ResourceOptions:
    """Options for a component whose name was `previous` in earlier versions of the program."""
    return pulumi.ResourceOptions(aliases=[pulumi.Alias(name=previous)] if previous else None)


def fill_replica(value: str, replica: str) -> str:
    """A `replica_env` value for one copy: `replica` is its number, or a target's template."""
    return value.replace(REPLICA, replica)


class Component(pulumi.ComponentResource):
    """A ComponentResource whose caller's options reach its children (`child_options`)."""

    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions | None) -> None:
        super().__init__(type_, name, None, opts)
        inherited = copy.copy(opts) if opts is not None else pulumi.ResourceOptions()
        for attribute in _OWN:
            setattr(inherited, attribute, None)
        self._inherited = pulumi.ResourceOptions.merge(
            inherited, pulumi.ResourceOptions(parent=self)
        )

    def child_options(self, opts: pulumi.ResourceOptions | None = None) -> pulumi.ResourceOptions:
        """The caller's options, parented to this component, then the child's own `opts`."""
        return pulumi.ResourceOptions.merge(self._inherited, opts)


@dataclass(frozen=True)
class AppImageArgs:
    image_name: pulumi.Input[str]  # repository:tag
    context: str  # absolute: Pulumi runs the program with infra/ as its working directory
    dockerfile: str
    platform: pulumi.Input[str]


class AppImage(Component):
    """The app image, built from the repository's Dockerfile by the engine (never pushed).

    Its child is `<name>-image`.
    """

    def __init__(
        self,
        name: str,
        args: AppImageArgs,
        opts: pulumi.ResourceOptions | None = None,
        *,
        type_prefix: str,
    ) -> None:
        super().__init__(f"{type_prefix}:AppImage", name, opts)
        self.image = docker.Image(
            f"{name}-image",
            docker.ImageArgs(
                image_name=args.image_name,
                build=docker.DockerBuildArgs(
                    context=args.context,
                    dockerfile=args.dockerfile,
                    # Explicit, or a host of another architecture sees a diff on every preview.
                    platform=args.platform,
                ),
                skip_push=True,
            ),
            opts=self.child_options(),
        )
        # With skip_push the repo digest is the local image id: containers use it, not the tag, so a
        # rebuilt image replaces them.
        self.image_id: pulumi.Output[str] = self.image.repo_digest
        self.register_outputs({"imageName": self.image.image_name, "imageId": self.image_id})
