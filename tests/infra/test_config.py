"""The configuration model: each key validated, each mistake its own message, no resource."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import (
    DEV_ONLY_POSTGRES_PASSWORD,
    FIELD_BY_KEY,
    PROD_REQUIRED_SECRETS,
    SECRET_KEYS,
    StackConfig,
    StackConfigError,
)
from infra.spec import APP_ROLES
from tests.infra.pulumi_mocks import REPO_ROOT, ProgramMocks, run_program
from tests.infra.stacks import API_KEY_SECRETS, PROD_SECRETS, TLS_SECRETS, WEBHOOK_SECRETS

# One invalid value per key (secrets included), and a fragment the key's own message must contain.
INVALID: dict[str, tuple[Any, str]] = {
    "environment": ("production", "'dev' or 'prod'"),
    "target": ("kubernetes", "'docker' or 'swarm'"),
    "postgresImage": ("postgres:latest", "pinned"),
    "redisImage": ("redis", "pinned"),
    "appImageName": ("Taskstack App", "repository"),
    "appImageTag": ("v1/2", "tag"),
    "platform": ("windows/amd64", "linux/amd64"),
    "publishAddress": ("localhost", "IPv4"),
    "apiPort": ("0", "greater than or equal to 1"),
    "flowerPort": ("70000", "less than or equal to 65535"),
    "postgresHostPort": ("-1", "greater than or equal to 1"),
    "redisHostPort": ("port", "integer"),
    "postgresUser": ("Robert'); DROP", "identifier"),
    "postgresDb": ("", "identifier"),
    "apiWorkers": ("0", "greater than 0"),
    "workerReplicas": ("-2", "greater than 0"),
    "workerConcurrency": ("0", "greater than 0"),
    "workerStopGraceSeconds": ("0", "greater than 0"),
    "waitTimeoutSeconds": ("soon", "integer"),
    "restartPolicy": ("sometimes", "unless-stopped"),
    "logMaxSizeMb": ("0", "greater than 0"),
    "logMaxFiles": ("0", "greater than 0"),
    "apiMemoryMb": ("0", "greater than 0"),
    "apiCpus": ("0", "positive number of CPUs"),
    "workerMemoryMb": ("-512", "greater than 0"),
    "workerCpus": ("two", "positive number of CPUs"),
    "postgresMemoryMb": ("1.5", "integer"),
    "postgresCpus": ("-1", "positive number of CPUs"),
    "redisMemoryMb": ("0", "greater than 0"),
    "redisCpus": ("0.0", "positive number of CPUs"),
    "appEnv": ('["DATABASE_URL=sqlite://"]', "NAME=value"),
    "apiReplicas": ("0", "greater than 0"),
    "apiAccessLog": ("sometimes", "valid boolean"),
    "proxyImage": ("haproxy", "pinned"),
    "proxyRequestTimeoutSeconds": ("0", "greater than or equal to 1"),
    "proxyMaxBodyKb": ("0", "greater than or equal to 1"),
    "backgroundCpuShares": ("2048", "less than or equal to 1024"),
    "workerLogLevel": ("LOUD", "'DEBUG', 'INFO', 'WARNING' or 'ERROR'"),
    "proxyAccessLog": ("true", "'all', 'errors' or 'off'"),
    "postgresNodeLabels": ("[]", "at least one node label"),
    "redisNodeLabels": ('["no value"]', "key=value"),
    "endpointMode": ("round-robin", "'vip' or 'dnsrr'"),
    "publishMode": ("mesh", "'ingress' or 'host'"),
    "updateParallelism": ("0", "greater than 0"),
    "updateDelaySeconds": ("-1", "greater than or equal to 0"),
    "updateMonitorSeconds": ("0", "greater than or equal to 1"),
    "apiUpdateOrder": ("random", "'start-first' or 'stop-first'"),
    "overlayEncryption": ("ipsec", "valid boolean"),
    "restartDelaySeconds": ("-5", "greater than or equal to 0"),
    "proxyReplicas": ("0", "greater than 0"),
    "reservationPercent": ("150", "less than or equal to 100"),
    "postgresPassword": ("short", "at least 16 characters"),
    "redisPassword": ("tiny", "at least 16 characters"),
    "flowerBasicAuth": ("no-colon-in-this-value", "user:password"),
    "tlsCertificate": ("not a certificate", "PEM certificate"),
    "tlsKey": ("not a key", "PEM private key"),
    "alertWebhookUrl": ("not-a-url", "http(s) URL"),
    "logFormat": ("xml", "'json' or 'text'"),
    "otlpEndpoint": ("collector:4318", "http(s) URL"),
    "monitoring": ("maybe", "valid boolean"),
    "prometheusImage": ("prom/prometheus:latest", "pinned"),
    "alertmanagerImage": ("alertmanager", "pinned"),
    "postgresExporterImage": ("postgres-exporter", "pinned"),
    "redisExporterImage": ("redis_exporter", "pinned"),
    "prometheusPort": ("0", "greater than or equal to 1"),
    "alertmanagerPort": ("99999", "less than or equal to 65535"),
    "scrapeIntervalSeconds": ("0", "greater than or equal to 1"),
    "prometheusRetentionDays": ("0", "greater than or equal to 1"),
    "prometheusRetentionMb": ("10", "greater than or equal to 64"),
    "prometheusMemoryMb": ("64", "greater than or equal to 128"),
    "alertQueueDepthFloor": ("-1", "greater than or equal to 0"),
    "alertOldestPendingJobSeconds": ("0", "greater than 0"),
    "alertJobFailureRatio": ("1.5", "less than 1"),
    "alertJobFailureMinFinished": ("-3", "greater than or equal to 0"),
    "alertApi5xxRatio": ("0", "greater than 0"),
    "alertApi5xxMinRequests": ("many", "integer"),
    "alertApiLatencyP99Seconds": ("0", "greater than 0"),
    "alertOutboxOldestSeconds": ("0", "greater than 0"),
    "backup": ("sometimes", "boolean"),
    "backupRepository": ("s3", "'volume', 'host-path' or 'repository-host'"),
    "backupRepositoryNodeLabels": ('["taskstack.backup"]', "must be a node label as key=value"),
    "backupRepositoryPath": ("backups", "absolute host path"),
    "walArchiveTimeoutSeconds": ("0", "greater than or equal to 1"),
    "backupFullIntervalHours": ("0", "greater than or equal to 1"),
    "backupDiffIntervalHours": ("1000", "less than or equal to 744"),
    "backupRetentionFull": ("0", "greater than or equal to 1"),
    "backupCheckSeconds": ("1", "greater than or equal to 5"),
    "restoreTarget": ("yesterday", "a time with its offset"),
    "restoreTimeline": ("newest", "a timeline number"),
    "postgresVolumeGeneration": ("-1", "greater than or equal to 0"),
    "restoreTimeoutMinutes": ("0", "greater than or equal to 1"),
    "alertWalArchiveBehindSeconds": ("0", "greater than 0"),
    "alertBackupFullAgeHours": ("0", "greater than 0"),
    "apiKeysRequired": ("mostly", "boolean"),
    "apiDocs": ("perhaps", "boolean"),
    "apiKeyRatePerSecond": ("0", "greater than 0"),
    "apiKeyBurst": ("0", "greater than or equal to 1"),
    "apiKeyMaxConcurrent": ("0", "greater than or equal to 1"),
    "proxyClientMaxConcurrent": ("0", "greater than or equal to 1"),
    "initialApiKey": ("short", "32 to 256 printable characters"),
}


def test_the_table_covers_every_key() -> None:
    assert set(INVALID) == set(FIELD_BY_KEY)


@pytest.mark.parametrize("key", sorted(INVALID))
def test_each_invalid_value_gets_its_own_message_before_any_resource(key: str) -> None:
    value, fragment = INVALID[key]
    stack = "prod"
    config: dict[str, Any] = {"environment": "prod"}
    secrets = dict(PROD_SECRETS)
    if key in SECRET_KEYS:
        secrets[key] = value
    else:
        config[key] = value
    created: list[str] = []
    mocks = CountingMocks(created)
    with pytest.raises(StackConfigError) as failure:
        run_program(config, stack=stack, secrets=secrets, mocks=mocks)
    message = str(failure.value)
    lines = [line for line in message.splitlines() if line.startswith("taskstack:")]
    assert len(lines) == 1, message  # exactly this key is blamed
    assert lines[0].startswith(f"taskstack:{key}: "), message
    assert fragment in lines[0], message
    secret_flag = " --secret" if key in SECRET_KEYS else ""
    assert f"fix: pulumi config set{secret_flag} taskstack:{key} " in message
    if key in SECRET_KEYS:
        assert str(value) not in message  # a rejected secret is not echoed
    assert created == [], "resources were declared before the configuration was valid"


class CountingMocks(ProgramMocks):
    def __init__(self, created: list[str]) -> None:
        super().__init__()
        self.created = created

    def new_resource(self, args):  # type: ignore[no-untyped-def]
        self.created.append(args.name)
        return super().new_resource(args)


def test_unknown_key_is_named_with_the_command_that_removes_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Delivered as the language host delivers a stack's configuration (PULUMI_CONFIG): the SDK's
    # public API lists the keys only there.
    config = {"environment": "dev", "workerReplica": "3"}
    monkeypatch.setenv(
        "PULUMI_CONFIG", json.dumps({f"taskstack:{k}": v for k, v in config.items()})
    )
    with pytest.raises(StackConfigError) as failure:
        run_program(config, stack="dev")
    message = str(failure.value)
    assert "taskstack:workerReplica is not a setting of this program" in message
    assert "workerReplicas" in message  # the known keys are listed
    assert "fix: pulumi config rm taskstack:workerReplica" in message


@pytest.mark.parametrize("missing", sorted(PROD_REQUIRED_SECRETS))
def test_prod_without_a_secret_names_the_secret_command(missing: str) -> None:
    secrets = {k: v for k, v in PROD_SECRETS.items() if k != missing}
    with pytest.raises(StackConfigError) as failure:
        run_program({"environment": "prod"}, stack="prod", secrets=secrets)
    message = str(failure.value)
    assert f"taskstack:{missing} is required in a prod stack" in message
    assert f"fix: pulumi config set --secret taskstack:{missing} " in message


def test_unset_environment_means_prod_and_needs_the_secrets() -> None:
    with pytest.raises(StackConfigError, match="required in a prod stack"):
        run_program({}, stack="staging")


@pytest.mark.parametrize("key", sorted(SECRET_KEYS))
def test_a_credential_stored_in_plain_text_is_refused(key: str) -> None:
    value = {**PROD_SECRETS, **TLS_SECRETS, **WEBHOOK_SECRETS, **API_KEY_SECRETS}[key]
    plain = {"environment": "dev", key: value}
    with pytest.raises(StackConfigError) as failure:
        run_program(plain, stack="dev")
    message = str(failure.value)
    assert f"taskstack:{key} holds a credential but is stored in plain text" in message
    assert value not in message


def test_prod_refuses_the_dev_only_password() -> None:
    secrets = {**PROD_SECRETS, "postgresPassword": DEV_ONLY_POSTGRES_PASSWORD}
    with pytest.raises(StackConfigError, match="dev-only password"):
        run_program({"environment": "prod"}, stack="prod", secrets=secrets)


def test_published_ports_must_differ() -> None:
    with pytest.raises(StackConfigError) as failure:
        run_program({"environment": "dev", "flowerPort": "8000"}, stack="dev")
    assert "taskstack:flowerPort: port 8000 is already used by apiPort" in str(failure.value)


def test_app_env_passes_allowed_settings_to_every_app_container() -> None:
    run = run_program(
        {"environment": "dev", "appEnv": '["VISIBILITY_TIMEOUT_SECONDS=30"]'}, stack="dev"
    )
    for role in APP_ROLES:
        for container in run.role(role):
            assert "VISIBILITY_TIMEOUT_SECONDS=30" in container.plain["envs"], container.name


def test_pulumi_yaml_declares_every_plain_key_with_the_model_default() -> None:
    project = yaml.safe_load(Path(REPO_ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "taskstack"
    assert project["main"] == "infra/"
    assert project["runtime"]["options"]["toolchain"] == "uv"
    declared = project["config"]
    assert set(declared) == set(FIELD_BY_KEY) - set(SECRET_KEYS)
    for key, declaration in declared.items():
        default = StackConfig.model_fields[FIELD_BY_KEY[key]].default
        expected = list(default) if isinstance(default, tuple) else default
        if isinstance(default, float):  # Pulumi.yaml has no number type: a string
            expected = str(default)
        assert declaration["default"] == expected, key
        assert declaration["description"], key
        assert declaration["type"] in {"string", "integer", "boolean", "array"}, key


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_hold_no_secret(stack: str) -> None:
    document = yaml.safe_load(Path(REPO_ROOT / f"Pulumi.{stack}.yaml").read_text())
    keys = {k.removeprefix("taskstack:") for k in (document.get("config") or {})}
    assert not keys & set(SECRET_KEYS)
    assert keys <= set(FIELD_BY_KEY)
