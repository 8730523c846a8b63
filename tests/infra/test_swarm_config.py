"""The swarm settings: validated with the other keys, before any resource, each error its fix."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import StackConfig, StackConfigError
from tests.infra.pulumi_mocks import SERVICE, ProgramMocks, run_program
from tests.infra.stacks import PROD_SECRETS


class CountingMocks(ProgramMocks):
    def __init__(self) -> None:
        super().__init__()
        self.created: list[str] = []

    def new_resource(self, args):  # type: ignore[no-untyped-def]
        self.created.append(args.name)
        return super().new_resource(args)


def failure(config: dict[str, Any]) -> str:
    mocks = CountingMocks()
    with pytest.raises(StackConfigError) as raised:
        run_program({"environment": "dev", "target": "swarm", **config}, stack="dev", mocks=mocks)
    assert mocks.created == [], "resources were declared before the configuration was valid"
    return str(raised.value)


def test_swarm_defaults_are_swarms_own() -> None:
    config = StackConfig.model_validate({"target": "swarm", "backupRepository": "repository-host"})
    assert (config.endpoint_mode, config.publish_mode) == ("vip", "ingress")
    assert config.api_update_order == "start-first"
    assert config.postgres_node_labels == ("taskstack.postgres=true",)
    assert config.redis_node_labels == ("taskstack.redis=true",)
    assert config.backup_repository_node_labels == ("taskstack.backup=true",)


def prod_failure(config: dict[str, str]) -> str:
    mocks = CountingMocks()
    with pytest.raises(StackConfigError) as raised:
        run_program({"target": "swarm", **config}, stack="prod", mocks=mocks, secrets=PROD_SECRETS)
    assert mocks.created == [], "resources were declared before the configuration was valid"
    return str(raised.value)


def test_a_prod_swarm_refuses_the_repository_on_the_database_s_node_with_its_fix() -> None:
    message = prod_failure({})
    assert "taskstack:backupRepository: a prod swarm stack keeps its repository off" in message
    assert "fix: pulumi config set taskstack:backupRepository repository-host" in message


def test_the_repository_host_may_not_share_the_database_s_node_label() -> None:
    message = prod_failure(
        {
            "backupRepository": "repository-host",
            "backupRepositoryNodeLabels": '["taskstack.postgres=true"]',
        }
    )
    assert "backupRepositoryNodeLabels: the repository host must be pinned to another" in message


def test_dnsrr_with_the_ingress_mesh_is_refused_with_its_fix() -> None:
    message = failure({"endpointMode": "dnsrr"})
    assert "taskstack:publishMode: ingress publishing needs endpointMode vip" in message
    assert "fix: pulumi config set taskstack:publishMode host" in message


def test_dnsrr_with_host_publishing_is_accepted() -> None:
    run = run_program(
        {"environment": "dev", "target": "swarm", "endpointMode": "dnsrr", "publishMode": "host"},
        stack="dev",
    )
    # The stack's 8 roles, monitoring's 4 and the backup role (both on unless turned off).
    assert len(run.of_type(SERVICE)) == 13


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("[]", "at least one node label"),
        ('["taskstack.postgres"]', "must be a node label as key=value"),
        ('["Bad Key=true"]', "must be a node label as key=value"),
        ("not json", "JSON array"),
    ],
)
def test_node_labels_are_checked(value: str, fragment: str) -> None:
    message = failure({"postgresNodeLabels": value})
    lines = [line for line in message.splitlines() if line.startswith("taskstack:")]
    assert len(lines) == 1, message
    assert lines[0].startswith("taskstack:postgresNodeLabels: ")
    assert fragment in lines[0]
    assert "fix: pulumi config set taskstack:postgresNodeLabels " in message


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("apiReplicas", "0", "greater than 0"),
        ("updateParallelism", "-1", "greater than 0"),
        ("updateDelaySeconds", "soon", "integer"),
        ("updateMonitorSeconds", "0", "greater than or equal to 1"),
        ("endpointMode", "ipvs", "'vip' or 'dnsrr'"),
        ("publishMode", "mesh", "'ingress' or 'host'"),
        ("apiUpdateOrder", "whenever", "'start-first' or 'stop-first'"),
    ],
)
def test_each_swarm_key_names_itself(key: str, value: str, fragment: str) -> None:
    message = failure({key: value})
    assert f"taskstack:{key}: " in message
    assert fragment in message
    assert f"fix: pulumi config set taskstack:{key} " in message


def test_several_mistakes_are_reported_together() -> None:
    message = failure({"apiReplicas": "0", "redisNodeLabels": "[]"})
    assert "taskstack:apiReplicas" in message
    assert "taskstack:redisNodeLabels" in message


def test_a_stack_name_too_long_for_swarm_secret_names_is_refused_before_any_resource() -> None:
    mocks = CountingMocks()
    config = {"target": "swarm", "backupRepository": "repository-host"}
    with pytest.raises(StackConfigError) as raised:
        run_program(config, stack="production-europe-west", mocks=mocks, secrets=PROD_SECRETS)
    assert mocks.created == [], "resources were declared before the name was checked"
    message = str(raised.value)
    assert "the stack name 'production-europe-west' is too long for a swarm" in message
    assert "use a stack name of at most" in message


def test_the_rehearsal_s_longest_stack_name_fits() -> None:
    run = run_program(
        {"target": "swarm", "backupRepository": "repository-host"},
        stack="rehearsal-swarm3",
        secrets=PROD_SECRETS,
    )
    names = [r.name for r in run.registrations if r.type == "docker:index/secret:Secret"]
    assert names
    assert max(len(name) for name in names) + 8 <= 64
