"""The whole stack, described: each role from the slice of configuration it reads, then the
networks, volumes, images, endpoints and secrets around them."""

from __future__ import annotations

from pathlib import Path

import pulumi

from infra.config import PROJECT, Credentials, StackConfig
from infra.spec.app_roles import (
    ApiSettings,
    AppRoles,
    FlowerSettings,
    WorkerSettings,
    api,
    beat,
    flower,
    migrate,
    worker,
)
from infra.spec.backup import (
    IMAGE_CONTEXT,
    BackupSettings,
    archiving,
    backup,
    backup_tls_secrets,
    repository,
)
from infra.spec.connections import Connections, stack_secrets
from infra.spec.data import DataSettings, postgres, redis
from infra.spec.front_door import FrontDoorSettings, front_door, tls_pem
from infra.spec.model import (
    AppImage,
    ClusterSettings,
    Endpoints,
    ImageKind,
    LogSettings,
    Network,
    SecretKey,
    Service,
    StackDescription,
    Volume,
    VolumeKey,
    in_dependency_order,
)
from infra.spec.monitoring import (
    MonitoringRoles,
    alertmanager,
    monitoring_secrets,
    postgres_exporter,
    prometheus,
    redis_exporter,
)
from infra.spec.shared import Shared


def _services(
    config: StackConfig,
    credentials: Credentials,
    app: AppRoles,
    pem: pulumi.Output[str] | None,
    repo_root: Path,
) -> tuple[Service, ...]:
    """One description per role, each from the slice of configuration it reads."""
    shared = app.shared
    database_settings = DataSettings.postgres(config)
    database = postgres(
        database_settings, shared, config.postgres_db, credentials.postgres_password
    )
    backups: tuple[Service, ...] = ()
    if config.backup:
        backup_settings = BackupSettings.of(config)
        database = archiving(database, backup_settings)
        backups = (
            backup(
                backup_settings,
                shared,
                config.postgres_db,
                config.postgres_user,
                database_settings.node_labels,
            ),
        )
        if backup_settings.repository_host:
            host = repository(backup_settings, shared, config.postgres_db, config.postgres_user)
            backups = (host, *backups)
    core = (
        database,
        redis(DataSettings.redis(config), shared, credentials.redis_password),
        *backups,
        migrate(app, credentials.initial_api_key),
        api(app, ApiSettings.of(config, repo_root)),
        worker(app, WorkerSettings.of(config)),
        beat(app),
        flower(app, FlowerSettings.of(config), credentials.flower_basic_auth),
        front_door(FrontDoorSettings.of(config, tls=pem is not None), shared, pem),
    )
    if not config.monitoring:
        return core
    auth = credentials.flower_basic_auth
    settings = MonitoringRoles.of(config)
    database_password = app.connections.database_password
    return (
        *core,
        postgres_exporter(shared, config.postgres_db, config.postgres_user, database_password),
        redis_exporter(shared, credentials.redis_password),
        prometheus(settings, shared, auth),
        alertmanager(settings, shared, auth, credentials.alert_webhook_url),
    )


def _endpoints(config: StackConfig, tls: bool) -> Endpoints:
    shown_host = "127.0.0.1" if config.publish_address == "0.0.0.0" else config.publish_address
    api_url = f"{'https' if tls else 'http'}://{shown_host}:{config.api_port}"
    monitoring = config.monitoring
    return Endpoints(
        api_url=api_url,
        docs_url=f"{api_url}/docs",
        flower_url=f"http://{shown_host}:{config.flower_port}",
        prometheus_url=f"http://{shown_host}:{config.prometheus_port}" if monitoring else None,
        alertmanager_url=f"http://{shown_host}:{config.alertmanager_port}" if monitoring else None,
    )


def _networks(shared: Shared) -> tuple[Network, ...]:
    # Dev keeps both networks but leaves `data` routable so its ports can be published on 127.0.0.1;
    # in prod it is `internal`: only containers attached to it reach PostgreSQL and Redis.
    prefix = f"{PROJECT}-{shared.stack}"
    labels = shared.labels("network")
    return (
        Network("app", f"{prefix}-app", internal=False, labels=labels),
        Network("data", f"{prefix}-data", internal=shared.prod, labels=labels),
    )


def _volumes(
    shared: Shared, services: tuple[Service, ...], postgres_generation: int
) -> tuple[Volume, ...]:
    """The named volumes the roles mount, in the order they are first mounted. PostgreSQL's data
    volume of a later generation (a fresh one, to restore into: docs/backup.md) has its own name."""
    keys: tuple[VolumeKey, ...] = tuple(
        dict.fromkeys(mount.volume for service in services for mount in service.volumes)
    )
    prefix = f"{PROJECT}-{shared.stack}"

    def name(key: VolumeKey) -> str:
        generation = f"-g{postgres_generation}" if key == "postgres" and postgres_generation else ""
        return f"{prefix}-{key}-data{generation}"

    return tuple(
        Volume(key, name(key), retain_on_delete=shared.prod, labels=shared.labels(key))
        for key in keys
    )


def _app_image(config: StackConfig, stack: str, repo_root: Path) -> AppImage:
    return AppImage(
        name=f"{config.app_image_name}:{config.app_image_tag or stack}",
        context=repo_root,
        dockerfile=repo_root / "Dockerfile",
        platform=config.platform,
    )


def _database_image(config: StackConfig, stack: str) -> AppImage | None:
    """PostgreSQL with pgBackRest, on top of `postgresImage`, when backups are on."""
    if not config.backup:
        return None
    return AppImage(
        name=f"{config.app_image_name}-postgres:{config.app_image_tag or stack}",
        context=IMAGE_CONTEXT,
        dockerfile=IMAGE_CONTEXT / "Dockerfile",
        platform=config.platform,
        build_args={"POSTGRES_IMAGE": config.postgres_image},
    )


def _cluster(config: StackConfig) -> ClusterSettings:
    return ClusterSettings(
        endpoint_mode=config.endpoint_mode,
        publish_mode=config.publish_mode,
        update_parallelism=config.update_parallelism,
        update_delay_seconds=config.update_delay_seconds,
        update_monitor_seconds=config.update_monitor_seconds,
        overlay_encryption=config.overlay_encryption,
        restart_delay_seconds=config.restart_delay_seconds,
        reservation_percent=config.reservation_percent,
    )


def describe_stack(
    config: StackConfig, credentials: Credentials, stack: str, repo_root: Path
) -> StackDescription:
    """The whole stack for `stack`, from its validated configuration and its credentials."""
    shared = Shared.of(config, stack)
    connections = Connections.of(config, credentials)
    app = AppRoles.of(config, shared, connections)
    pem = tls_pem(credentials)
    services = in_dependency_order(_services(config, credentials, app, pem, repo_root))
    images: dict[ImageKind, str] = {
        "postgres": config.postgres_image,
        "redis": config.redis_image,
        "proxy": config.proxy_image,
        "prometheus": config.prometheus_image,
        "alertmanager": config.alertmanager_image,
        "postgres-exporter": config.postgres_exporter_image,
        "redis-exporter": config.redis_exporter_image,
    }
    # Only what some role uses: a secret store holds nothing else.
    secrets = {
        **stack_secrets(credentials, connections, pem),
        **monitoring_secrets(credentials),
        **backup_tls_secrets(credentials.postgres_password),
    }
    used: set[SecretKey] = {key for s in services for key in s.file_secrets.files.values()}
    return StackDescription(
        project=PROJECT,
        stack=stack,
        environment=config.environment,
        target=config.target,
        networks=_networks(shared),
        volumes=_volumes(shared, services, config.postgres_volume_generation),
        app_image=_app_image(config, stack, repo_root),
        images={
            kind: images[kind]
            for kind in dict.fromkeys(s.image for s in services)
            if kind not in ("app", "postgres-backup")
        },
        database_image=_database_image(config, stack),
        services=services,
        logging=LogSettings(
            driver="json-file",
            options={
                "max-size": f"{config.log_max_size_mb}m",
                "max-file": str(config.log_max_files),
            },
        ),
        wait_timeout_seconds=config.wait_timeout_seconds,
        endpoints=_endpoints(config, tls=pem is not None),
        database_url=connections.database_url,
        redis_url=connections.redis_url,
        secrets={key: value for key, value in secrets.items() if key in used},
        cluster=_cluster(config),
    )
