"""What infra hands the app is what the app reads: each fact is defined once, in the app.

A renamed setting (`app.config.Settings`), a moved secrets directory or heartbeat file, or another
body cap fails here rather than being silently ignored by the app.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from app.config import MAX_REQUEST_BODY_BYTES, SECRETS_DIR, Settings
from infra import proxy
from infra.config import APP_ENV_KEYS, StackConfig
from infra.spec import APP_ROLES
from tests.infra.pulumi_mocks import REPO_ROOT, SERVICE, container_env
from tests.infra.stacks import run_stack

# Variables the program sets in app containers that are read by something else than `Settings`.
READ_BY_OTHERS = {
    "CELERY_WORKER_HOSTNAME": "celery worker's --hostname",
    "PROMETHEUS_MULTIPROC_DIR": "prometheus_client's multiprocess mode",
}


def setting_names() -> set[str]:
    """The environment variables `Settings` reads: its field names, upper-cased."""
    return {name.upper() for name in Settings.model_fields}


def test_every_setting_a_stack_may_pass_is_a_setting_of_the_app() -> None:
    assert not APP_ENV_KEYS - setting_names(), APP_ENV_KEYS - setting_names()


def test_every_variable_the_app_containers_get_is_read_by_the_app() -> None:
    passed = json.dumps([f"{key}=1" for key in sorted(APP_ENV_KEYS - {"WORKER_HEARTBEAT_SECONDS"})])
    run = run_stack("prod", appEnv=passed)
    for role in APP_ROLES:
        for container in run.role(role):
            unknown = set(container_env(container)) - setting_names() - set(READ_BY_OTHERS)
            assert not unknown, (container.name, unknown)


def test_the_secrets_directory_and_the_heartbeat_file_are_the_apps() -> None:
    run = run_stack("prod", target="swarm", backupRepository="repository-host")
    specs = {r.name: r.plain["taskSpec"]["containerSpec"] for r in run.of_type(SERVICE)}
    postgres_file = specs["postgres"]["env"]["POSTGRES_PASSWORD_FILE"]
    assert Path(postgres_file).parent == SECRETS_DIR
    heartbeat = Settings.model_fields["worker_heartbeat_path"].default
    assert specs["worker"]["env"]["WORKER_HEARTBEAT_PATH"] == str(heartbeat)
    assert f"find {heartbeat} -mmin -1" in specs["worker"]["healthcheck"]["tests"][1]


def test_the_proxys_body_cap_is_the_apps() -> None:
    assert StackConfig().proxy_max_body_kb * 1024 == MAX_REQUEST_BODY_BYTES
    declared = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["config"]
    assert declared["proxyMaxBodyKb"]["default"] * 1024 == MAX_REQUEST_BODY_BYTES
    container = run_stack("dev").named("proxy")
    assert (
        f"req.body_size gt {MAX_REQUEST_BODY_BYTES}" in container_env(container)[proxy.CONFIG_ENV]
    )
