"""The deployers' wiring (deploy/), without a Pulumi CLI or a Docker engine: which one DEPLOYER
picks, what the rehearsal deployer runs, and what the Automation API deployer asks of
`pulumi.automation` (work dir, stack name, secrets provider, backend, configuration, outputs, the
steps it reports, what `down` destroys). The entry points are replaced by recorders."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pulumi import automation as auto
from pulumi.automation.events import EngineEvent, OpType, ResourcePreEvent, StepEventMetadata

import deploy.automation
from deploy import DeployError, deployer
from deploy.automation import AutomationDeployer
from deploy.base import ARTIFACTS, REPO_ROOT, Deployer
from deploy.rehearsal import RehearsalDeployer
from rehearsal.stack_config import StackConfig

URN = "urn:pulumi:rehearsal-dev::taskstack::"


# -- which deployer
# ----------------------------------------------------------------------------------------


def test_the_rehearsal_unless_deployer_says_pulumi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEPLOYER", raising=False)
    chosen = deployer("dev")
    assert isinstance(chosen, RehearsalDeployer)
    assert (chosen.stack, chosen.name) == ("dev", "rehearsal-dev")
    monkeypatch.setenv("DEPLOYER", "pulumi")
    chosen = deployer("prod", "bench-prod", echo=True)
    assert isinstance(chosen, AutomationDeployer)
    assert (chosen.stack, chosen.name, chosen.echo) == ("prod", "bench-prod", True)
    monkeypatch.setenv("DEPLOYER", "compose")
    with pytest.raises(DeployError, match="DEPLOYER=compose"):
        deployer("dev")


# -- the rehearsal
# ----------------------------------------------------------------------------------------

REHEARSAL_UP = f"""rehearsal rehearsal-dev: up in 3s
  changes: 2
    replace {URN}docker:index/container:Container::migrate (env)
    create {URN}docker:index/network:Network::app
  apiUrl: http://127.0.0.1:18000
"""


class Runs:
    """subprocess.run's stand-in: the commands, and a canned answer."""

    def __init__(self, returncode: int = 0, stdout: str = "", stderr: str = "") -> None:
        self.commands: list[tuple[list[str], dict[str, Any]]] = []
        self.answer = (returncode, stdout, stderr)

    def __call__(self, argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
        self.commands.append((argv, options))
        returncode, stdout, stderr = self.answer
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)


def test_the_rehearsal_runs_its_cli_with_the_stack_the_name_and_the_keys(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runs = Runs(stdout=REHEARSAL_UP)
    monkeypatch.setattr(subprocess, "run", runs)
    rehearsal = RehearsalDeployer("dev", "rehearsal-dev")
    deployed = rehearsal.up({"apiPort": "18001"}, {"postgresPassword": "pw"})

    (argv, options), *_ = runs.commands
    assert argv == [
        *(sys.executable, "-m", "rehearsal", "up", "--stack", "dev", "--name", "rehearsal-dev"),
        *("--outputs-json", str(ARTIFACTS / "rehearsal-dev-outputs.json")),
        *("--config", "apiPort=18001", "--secret", "postgresPassword=pw"),
    ]
    assert options["cwd"] == REPO_ROOT
    assert deployed.ok
    assert deployed.changes == [line.strip() for line in REHEARSAL_UP.splitlines()[2:4]]

    rehearsal.down(volumes=True)
    assert runs.commands[-1][0][3:] == [
        "down",
        "--stack",
        "dev",
        "--name",
        "rehearsal-dev",
        "--volumes",
    ]


def test_a_failed_rehearsal_up_is_reported_or_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subprocess, "run", Runs(1, "", "the migration exited with code 1"))
    rehearsal = RehearsalDeployer("dev", "rehearsal-dev")
    failed = rehearsal.up(check=False)
    assert not failed.ok
    assert "the migration exited with code 1" in failed.log
    with pytest.raises(DeployError, match="the migration exited"):
        rehearsal.up()


def test_the_rehearsal_outputs_are_the_file_its_last_up_wrote(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(deploy.rehearsal, "ARTIFACTS", tmp_path)
    rehearsal = RehearsalDeployer("dev", "rehearsal-dev")
    assert rehearsal.outputs() == {}
    (tmp_path / "rehearsal-dev-outputs.json").write_text(json.dumps({"apiUrl": "http://x"}))
    assert rehearsal.outputs() == {"apiUrl": "http://x"}


# -- the Automation API
# ----------------------------------------------------------------------------------------


class FakeWorkspace:
    def __init__(self) -> None:
        self.removed: list[str] = []

    def remove_stack(self, stack_name: str) -> None:
        self.removed.append(stack_name)


class FakeStack:
    """The `auto.Stack` calls the deployer makes, recorded; `up` plays the engine's events."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any, dict[str, Any]]] = []
        self.config: dict[str, auto.ConfigValue] = {"taskstack:stale": auto.ConfigValue("1")}
        self.events: list[EngineEvent] = []
        self.failure: auto.CommandError | None = None
        self.resources: list[dict[str, Any]] = []
        self.workspace = FakeWorkspace()

    def get_all_config(self) -> dict[str, auto.ConfigValue]:
        return dict(self.config)

    def remove_all_config(self, keys: list[str]) -> None:
        self.calls.append(("remove_all_config", keys, {}))

    def set_all_config(self, config: dict[str, auto.ConfigValue], *, path: bool = False) -> None:
        self.calls.append(("set_all_config", config, {"path": path}))

    def up(self, **options: Any) -> auto.UpResult:
        self.calls.append(("up", None, options))
        for event in self.events:
            options["on_event"](event)
        if self.failure:
            raise self.failure
        summary = auto.UpdateSummary("update", datetime.now(UTC), "", {}, {}, "succeeded")
        return auto.UpResult("Resources: 2 changed\n", "", summary, {})

    def destroy(self, **options: Any) -> None:
        self.calls.append(("destroy", None, options))

    def export_stack(self) -> auto.Deployment:
        return auto.Deployment(version=3, deployment={"resources": self.resources})

    def outputs(self) -> dict[str, auto.OutputValue]:
        return {
            "apiUrl": auto.OutputValue("http://127.0.0.1:18000", secret=False),
            "databaseUrl": auto.OutputValue("postgresql://...", secret=True),
        }


@pytest.fixture
def pulumi_stack(monkeypatch: pytest.MonkeyPatch) -> FakeStack:
    """`auto.create_or_select_stack` returns a FakeStack; what it was asked is on `.selected`."""
    stack = FakeStack()
    selected: list[dict[str, Any]] = []

    def create_or_select_stack(**arguments: Any) -> FakeStack:
        selected.append(arguments)
        return stack

    monkeypatch.setattr(auto, "create_or_select_stack", create_or_select_stack)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "unit-test")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("PULUMI_BACKEND_URL", raising=False)
    stack.selected = selected  # type: ignore[attr-defined]
    return stack


@pytest.fixture
def loaded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The rehearsal's configuration reader, answering a fixed dev configuration."""
    calls: list[tuple[Any, ...]] = []

    def load_stack_config(stack: str, overrides: list[str], **options: Any) -> StackConfig:
        calls.append((stack, overrides, options))
        return StackConfig(
            project="taskstack",
            program_dir=REPO_ROOT / "infra",
            values={
                "taskstack:environment": "dev",
                "taskstack:apiPort": "18001",
                "taskstack:appEnv": '["JOB_WORK_SECONDS=0.2", "REAPER_INTERVAL_SECONDS=5"]',
                "taskstack:flowerBasicAuth": "rehearsal:generated",
                "taskstack:postgresPassword": "pw",
            },
            secret_keys=["taskstack:flowerBasicAuth", "taskstack:postgresPassword"],
        )

    monkeypatch.setattr(deploy.automation, "load_stack_config", load_stack_config)
    return calls


def _values(config: dict[str, auto.ConfigValue]) -> dict[str, tuple[str, bool]]:
    return {key: (value.value, value.secret) for key, value in config.items()}


def _pre(op: OpType, name: str, diffs: list[str] | None = None) -> EngineEvent:
    step = StepEventMetadata(op=op, urn=URN + name, type="t", provider="p", diffs=diffs)
    return EngineEvent(sequence=1, timestamp=0, resource_pre_event=ResourcePreEvent(step))


def test_a_local_workspace_on_this_project_with_the_stack_name_and_passphrase(
    pulumi_stack: FakeStack,
) -> None:
    selected_stack: object = AutomationDeployer("dev", "rehearsal-dev").pulumi_stack
    assert selected_stack is pulumi_stack
    (selected,) = pulumi_stack.selected  # type: ignore[attr-defined]
    assert selected["stack_name"] == "rehearsal-dev"
    assert selected["work_dir"] == str(REPO_ROOT)
    assert (REPO_ROOT / "Pulumi.yaml").exists()
    options: auto.LocalWorkspaceOptions = selected["opts"]
    assert options.secrets_provider == "passphrase"
    # The local file backend, as make up (scripts/bootstrap.py) chooses it.
    assert options.env_vars == {"PULUMI_BACKEND_URL": f"file://{REPO_ROOT / '.pulumi-state'}"}


def test_a_backend_the_user_chose_is_kept(
    pulumi_stack: FakeStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "file:///elsewhere")
    assert AutomationDeployer("dev", "rehearsal-dev").environment() == {
        "PULUMI_BACKEND_URL": "file:///elsewhere"
    }


def test_no_passphrase_no_stack(pulumi_stack: FakeStack, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    with pytest.raises(DeployError, match="PULUMI_CONFIG_PASSPHRASE"):
        _ = AutomationDeployer("dev", "rehearsal-dev").pulumi_stack
    assert pulumi_stack.selected == []  # type: ignore[attr-defined]


def test_up_sets_the_rehearsals_configuration_then_runs_up(
    pulumi_stack: FakeStack, loaded: list[tuple[Any, ...]]
) -> None:
    automation = AutomationDeployer("dev", "rehearsal-dev")
    automation.up({"apiPort": "18001"}, {"postgresPassword": "pw"})

    # The same layers the rehearsal reads, this `up`'s keys, the credentials under the stack name.
    assert loaded == [
        (
            "dev",
            ["apiPort=18001"],
            {"secret_overrides": ["postgresPassword=pw"], "secrets_name": "rehearsal-dev"},
        )
    ]
    (removed, plain, paths, up) = pulumi_stack.calls
    assert removed == ("remove_all_config", ["taskstack:stale"], {})
    assert plain[0] == paths[0] == "set_all_config"
    assert _values(plain[1]) == {
        "taskstack:environment": ("dev", False),
        "taskstack:apiPort": ("18001", False),
        "taskstack:flowerBasicAuth": ("rehearsal:generated", True),
        "taskstack:postgresPassword": ("pw", True),
    }
    assert plain[2] == {"path": False}
    # An array is a list in the stack file, element by element.
    assert _values(paths[1]) == {
        "taskstack:appEnv[0]": ("JOB_WORK_SECONDS=0.2", False),
        "taskstack:appEnv[1]": ("REAPER_INTERVAL_SECONDS=5", False),
    }
    assert paths[2] == {"path": True}
    assert up[0] == "up"
    assert up[2]["on_output"] is None  # not echoed unless asked


def test_up_reports_the_engines_steps_as_the_rehearsal_does(
    pulumi_stack: FakeStack, loaded: list[tuple[Any, ...]]
) -> None:
    migrate = "taskstack:index:Role$docker:index/container:Container::migrate"
    pulumi_stack.events = [
        _pre(OpType.SAME, "docker:index/network:Network::data"),
        _pre(OpType.CREATE_REPLACEMENT, migrate, ["env"]),
        _pre(OpType.REPLACE, migrate, ["env"]),
        _pre(OpType.DELETE_REPLACED, migrate, ["env"]),
        _pre(OpType.UPDATE, "docker:index/container:Container::api-1", ["labels", "env"]),
        _pre(OpType.CREATE, "docker:index/network:Network::app"),
        EngineEvent(sequence=2, timestamp=0),  # not a step
    ]
    deployed = AutomationDeployer("dev", "rehearsal-dev").up()
    assert deployed.ok
    assert deployed.changes == [
        f"replace {URN}{migrate} (env)",
        f"update {URN}docker:index/container:Container::api-1 (labels, env)",
        f"create {URN}docker:index/network:Network::app",
    ]
    assert "Resources: 2 changed" in deployed.log


def test_a_failed_up_is_reported_or_raised(
    pulumi_stack: FakeStack, loaded: list[tuple[Any, ...]]
) -> None:
    result = auto.CommandResult(stdout="", stderr="password authentication failed", code=255)
    pulumi_stack.failure = auto.CommandError(result)
    automation = AutomationDeployer("dev", "rehearsal-dev")
    failed = automation.up(check=False)
    assert not failed.ok
    assert failed.changes == []
    assert "password authentication failed" in failed.log
    with pytest.raises(DeployError, match="password authentication failed"):
        automation.up()


def test_outputs_are_the_stacks_non_secret_outputs(pulumi_stack: FakeStack) -> None:
    outputs = AutomationDeployer("dev", "rehearsal-dev").outputs()
    assert outputs == {"apiUrl": "http://127.0.0.1:18000"}


STACK = {"urn": URN + "pulumi:pulumi:Stack::taskstack-rehearsal-dev", "type": "pulumi:pulumi:Stack"}
PROVIDER = {"urn": URN + "pulumi:providers:docker::default", "type": "pulumi:providers:docker"}
ROLE = {"urn": URN + "taskstack:index:Role::postgres", "type": "taskstack:index:Role"}
VOLUME = {
    "urn": URN + "taskstack:index:Role$docker:index/volume:Volume::postgres-data",
    "type": "docker:index/volume:Volume",
    "parent": ROLE["urn"],
}
CONTAINER = {
    "urn": URN + "taskstack:index:Role$docker:index/container:Container::postgres",
    "type": "docker:index/container:Container",
    "parent": ROLE["urn"],
}
NETWORK = {
    "urn": URN + "docker:index/network:Network::data",
    "type": "docker:index/network:Network",
}


def test_down_keeps_the_volumes_and_their_parents(pulumi_stack: FakeStack) -> None:
    pulumi_stack.resources = [STACK, PROVIDER, ROLE, VOLUME, CONTAINER, NETWORK]
    AutomationDeployer("dev", "rehearsal-dev").down()
    ((call, _, options),) = pulumi_stack.calls
    assert call == "destroy"
    assert options["target"] == [CONTAINER["urn"], NETWORK["urn"]]
    assert options["target_dependents"] is True
    assert pulumi_stack.workspace.removed == []


def test_down_of_an_empty_stack_destroys_nothing(pulumi_stack: FakeStack) -> None:
    AutomationDeployer("dev", "rehearsal-dev").down()
    assert pulumi_stack.calls == []  # a `destroy` without targets would take everything


class FakeVolume:
    def __init__(self, removed: list[str], name: str) -> None:
        self.removed, self.name = removed, name

    def remove(self) -> None:
        self.removed.append(self.name)


class FakeEngine:
    """The Docker SDK's client, as far as the deployers use it."""

    def __init__(self) -> None:
        self.filters: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.volumes = self
        self.containers = self

    def list(self, **options: Any) -> list[Any]:
        self.filters.append(options)
        return [FakeVolume(self.removed, "taskstack-rehearsal-prod-postgres-data")]


def test_down_with_volumes_destroys_all_removes_kept_volumes_and_the_stack(
    pulumi_stack: FakeStack,
) -> None:
    automation = AutomationDeployer("prod", "rehearsal-prod")
    engine = FakeEngine()
    automation.__dict__["engine"] = engine
    pulumi_stack.resources = [STACK, PROVIDER, ROLE, VOLUME, CONTAINER, NETWORK]
    automation.down(volumes=True)
    ((call, _, options),) = pulumi_stack.calls
    assert call == "destroy"
    assert "target" not in options
    # prod's volumes are retain_on_delete: `pulumi destroy` leaves them on the engine.
    assert engine.filters == [{"filters": {"label": "com.taskstack.stack=rehearsal-prod"}}]
    assert engine.removed == ["taskstack-rehearsal-prod-postgres-data"]
    assert pulumi_stack.workspace.removed == ["rehearsal-prod"]
    # The next `up` selects (creates) the stack again.
    assert "pulumi_stack" not in automation.__dict__


@pytest.mark.parametrize("kind", [RehearsalDeployer, AutomationDeployer])
def test_the_stacks_containers_by_the_programs_labels(kind: type[Deployer]) -> None:
    chosen = kind("prod", "rehearsal-prod")
    engine = FakeEngine()
    chosen.__dict__["engine"] = engine
    chosen.containers()
    chosen.containers("api")
    assert engine.filters == [
        {"all": True, "filters": {"label": ["com.taskstack.stack=rehearsal-prod"]}},
        {
            "all": True,
            "filters": {"label": ["com.taskstack.stack=rehearsal-prod", "com.taskstack.role=api"]},
        },
    ]
