"""Stack outputs: what `pulumi stack output` shows after an `up`."""

from __future__ import annotations

import pulumi

from infra.spec import StackDescription
from infra.targets.core import Rendered


def export_outputs(description: StackDescription, rendered: Rendered) -> None:
    endpoints = description.endpoints
    pulumi.export("apiUrl", endpoints.api_url)
    pulumi.export("docsUrl", endpoints.docs_url)
    pulumi.export("flowerUrl", endpoints.flower_url)
    if endpoints.prometheus_url is not None:
        pulumi.export("prometheusUrl", endpoints.prometheus_url)
        pulumi.export("alertmanagerUrl", endpoints.alertmanager_url)
    pulumi.export("imageName", rendered.image_name)
    pulumi.export("imageId", rendered.image_id)
    pulumi.export("containerNames", {role: list(names) for role, names in rendered.names.items()})
    # In-network URLs (hosts `postgres`, `redis`): what the app containers use.
    pulumi.export("databaseUrl", pulumi.Output.secret(description.database_url))
    pulumi.export("redisUrl", pulumi.Output.secret(description.redis_url))
    if rendered.migration_run is not None:
        # Read back by the next `up` (infra/targets/docker_migration.py, migration_run_label).
        pulumi.export("migrationRun", rendered.migration_run)
