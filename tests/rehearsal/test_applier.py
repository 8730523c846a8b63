"""The applier against a real engine, on a small hand-written program (sample_program/ beside
this file)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from rehearsal.appliers.docker import delete_container
from rehearsal.engine import STACK_LABEL, RehearsalError, api_client
from rehearsal.stack import down, up
from rehearsal.stack_config import StackConfig
from rehearsal.state import StackState

SAMPLE_PROGRAM = Path(__file__).parent / "sample_program"
STACK = "applier-test"
PREFIX = f"rehearsal-sample-{STACK}"


def _config(variant: str, **values: str) -> StackConfig:
    return StackConfig(
        project="sample",
        program_dir=SAMPLE_PROGRAM,
        values={"sample:variant": variant, **{f"sample:{k}": v for k, v in values.items()}},
    )


@pytest.fixture
def state(tmp_path: Path) -> Iterator[StackState]:
    stack_state = StackState(STACK, tmp_path / "state")
    yield stack_state
    down(STACK, volumes=True, state=stack_state, log=lambda _: None)


@pytest.fixture
def client() -> docker.APIClient:
    return api_client()


def _quiet(_: str) -> None:
    pass


def test_program_is_applied_with_the_provider_semantics(
    state: StackState, client: docker.APIClient
) -> None:
    lines: list[str] = []
    result = up(STACK, _config("ok"), state=state, log=lines.append)

    server = client.inspect_container(f"{PREFIX}-server")
    assert server["State"]["Health"]["Status"] == "healthy"
    assert server["Config"]["User"] == "1000:1000"
    assert server["HostConfig"]["ReadonlyRootfs"] is True
    assert server["HostConfig"]["CapDrop"] == ["ALL"]
    assert server["HostConfig"]["SecurityOpt"] == ["no-new-privileges:true"]
    assert server["HostConfig"]["Tmpfs"] == {"/tmp": "rw,size=8m"}  # noqa: S108
    # networks_advanced replaces the default bridge, with the declared alias.
    networks = server["NetworkSettings"]["Networks"]
    assert list(networks) == [f"{PREFIX}-net"]
    assert "web" in networks[f"{PREFIX}-net"]["Aliases"]
    assert server["Config"]["Labels"]["rehearsal.sample"] == "yes"
    assert server["Config"]["Labels"][STACK_LABEL] == STACK

    # attach: the one-shot's non-zero exit does not fail the up; its code and output are outputs.
    assert result.outputs["oneShotExitCode"] == 3
    assert "hello from the one-shot" in result.outputs["oneShotLogs"]

    # depends_on alone (no data dependency) holds the client back until the server is healthy.
    healthy = lines.index(f"  {PREFIX}-server is healthy")
    assert lines.index(f"  started {PREFIX}-client") > healthy
    assert lines.index(f"  started {PREFIX}-one-shot") > healthy
    logs = b""
    for _ in range(30):
        logs = client.logs(f"{PREFIX}-client")
        if b"reached web" in logs:
            break
        time.sleep(1)
    assert b"reached web" in logs


def test_second_up_changes_nothing_and_restarts_a_stopped_container(
    state: StackState, client: docker.APIClient
) -> None:
    up(STACK, _config("ok"), state=state, log=_quiet)
    names = ("server", "one-shot", "client")
    before = {name: client.inspect_container(f"{PREFIX}-{name}") for name in names}
    # Nothing changed: the diff against the read-back state finds no step.
    assert up(STACK, _config("ok"), state=state, log=_quiet).changes == []
    client.stop(f"{PREFIX}-client", timeout=0)

    again = up(STACK, _config("ok"), state=state, log=_quiet)

    # The one step: must_run read back false for the stopped container, so an update starts it.
    assert [(c.op, c.urn.rsplit("::", 1)[1], c.properties) for c in again.changes] == [
        ("update", "client", ["mustRun"])
    ]
    after = {name: client.inspect_container(f"{PREFIX}-{name}") for name in names}
    assert {n: c["Id"] for n, c in after.items()} == {n: c["Id"] for n, c in before.items()}
    # must_run=False: the one-shot is not run again.
    assert after["one-shot"]["State"]["StartedAt"] == before["one-shot"]["State"]["StartedAt"]
    # must_run (default true): the stopped container is started again, same container.
    assert after["client"]["State"]["Running"] is True


def test_down_removes_in_reverse_order_and_keeps_named_volumes(
    state: StackState, client: docker.APIClient
) -> None:
    up(STACK, _config("ok"), state=state, log=_quiet)
    deleted = down(STACK, state=state, log=_quiet)

    names = [urn.rsplit("::", 1)[1] for urn in deleted]
    assert names.index("client") < names.index("server") < names.index("net")
    assert client.containers(all=True, filters={"label": f"{STACK_LABEL}={STACK}"}) == []
    assert client.networks(filters={"label": f"{STACK_LABEL}={STACK}"}) == []
    assert client.inspect_volume(f"{PREFIX}-data")["Name"] == f"{PREFIX}-data"

    down(STACK, volumes=True, state=state, log=_quiet)
    with pytest.raises(docker.errors.NotFound):
        client.inspect_volume(f"{PREFIX}-data")


def test_a_leftover_of_an_earlier_run_is_removed_first(
    state: StackState, client: docker.APIClient
) -> None:
    leftover = client.create_container(
        "python:3.13-slim",
        command=["sleep", "600"],
        name=f"{PREFIX}-client",
        labels={STACK_LABEL: STACK},
    )["Id"]

    up(STACK, _config("ok"), state=state, log=_quiet)

    assert client.inspect_container(f"{PREFIX}-client")["Id"] != leftover
    with pytest.raises(docker.errors.NotFound):
        client.inspect_container(leftover)


def test_an_input_the_rehearsal_does_not_apply_is_refused_by_name(state: StackState) -> None:
    with pytest.raises(RehearsalError, match=r"input\(s\) gpus not applied"):
        up(STACK, _config("unknown-input"), state=state, log=_quiet)


def test_wait_without_a_healthcheck_is_an_error(state: StackState) -> None:
    with pytest.raises(RehearsalError, match="does not have a healthcheck defined"):
        up(STACK, _config("no-healthcheck"), state=state, log=_quiet)


def test_an_unhealthy_container_fails_only_at_wait_timeout(
    state: StackState, client: docker.APIClient
) -> None:
    with pytest.raises(RehearsalError, match="container failed to be in healthy state"):
        up(STACK, _config("unhealthy"), state=state, log=_quiet)
    health = client.inspect_container(f"{PREFIX}-server")["State"]["Health"]
    # retries=1: unhealthy after the first failing probe, yet the wait went on probing.
    assert health["Status"] == "unhealthy"
    assert health["FailingStreak"] > 2
    # Nothing that depends on it was created.
    assert client.containers(all=True, filters={"name": f"{PREFIX}-client"}) == []


def _trapping_container(client: docker.APIClient, marker_dir: Path) -> str:
    # On SIGTERM: 2 s of "work", then the marker file: present only after a graceful stop.
    script = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        "    time.sleep(2)\n"
        "    open('/marker/finished', 'w').write('yes')\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
    )
    container = client.create_container(
        "python:3.13-slim",
        command=["python", "-c", script],
        labels={STACK_LABEL: STACK},
        host_config=client.create_host_config(binds={str(marker_dir): {"bind": "/marker"}}),
    )["Id"]
    client.start(container)
    for _ in range(30):
        if b"ready" in client.logs(container):
            break
        time.sleep(0.5)
    return str(container)


@pytest.mark.parametrize(("grace", "finished"), [(None, False), (10, True)])
def test_destroy_grace_seconds_is_the_stop_timeout(
    client: docker.APIClient, tmp_path: Path, grace: int | None, finished: bool
) -> None:
    container = _trapping_container(client, tmp_path)
    delete_container(client, container, grace_seconds=grace, attach=False)
    assert (tmp_path / "finished").exists() is finished


def test_replacements_follow_the_engine_order(state: StackState, client: docker.APIClient) -> None:
    first = up(STACK, _config("ok", generation="1"), state=state, log=_quiet)
    old_side = str(first.outputs["sideName"])
    old_fixed = client.inspect_container(f"{PREFIX}-fixed")["Id"]
    lines: list[str] = []

    second = up(STACK, _config("ok", generation="2"), state=state, log=lines.append)

    new_side = str(second.outputs["sideName"])
    assert new_side != old_side  # auto-named: the replacement has a name of its own
    replaced = {c.urn.rsplit("::", 1)[1] for c in second.changes if c.op == "replace"}
    assert replaced == {"side", "fixed"}
    # delete_before_replace=False: the new container runs next to the old one, which is deleted
    # only once everything else has been applied (the last step of the deployment).
    started_new = lines.index(f"  started {new_side}")
    deleted_old = lines.index(f"  deleting replaced {old_side}")
    assert started_new < deleted_old
    assert deleted_old > max(i for i, line in enumerate(lines) if "started" in line)
    # The provider's default (delete before replace): the old one goes first, under its fixed name.
    urn_fixed = next(c.urn for c in second.changes if c.urn.endswith("::fixed"))
    assert lines.index(f"  replacing {urn_fixed} (delete before create)") < lines.index(
        f"  started {PREFIX}-fixed"
    )
    with pytest.raises(docker.errors.NotFound):
        client.inspect_container(old_side)
    assert client.inspect_container(f"{PREFIX}-fixed")["Id"] != old_fixed
    assert client.inspect_container(new_side)["State"]["Running"] is True


def _secret_config(value: str, **values: str) -> StackConfig:
    config = _config("ok", secret=value, **values)
    config.secret_keys = ["sample:secret"]
    return config


def test_an_upload_into_a_read_only_root_filesystem_is_refused(
    state: StackState, client: docker.APIClient
) -> None:
    # As the provider sends it (an archive extracted at "/"), the engine refuses it even though a
    # writable volume holds the file's path: why the docker target uploads into a secrets container.
    with pytest.raises(RehearsalError, match="container rootfs is marked read-only"):
        up(STACK, _secret_config("s3cret-value", secretsDirect="true"), state=state, log=_quiet)


def test_secret_files_land_in_a_read_only_volume_readable_by_the_user(
    state: StackState, client: docker.APIClient
) -> None:
    result = up(STACK, _secret_config("s3cret-value"), state=state, log=_quiet)
    reader, holder = result.outputs["readerId"], result.outputs["holderId"]

    # The secrets container was created and never started; the reader keeps its read-only root.
    assert client.inspect_container(holder)["State"]["Status"] == "created"
    inspected = client.inspect_container(reader)
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert inspected["HostConfig"]["VolumesFrom"] == [f"{holder}:ro"]
    # ...and never shows the value to `docker inspect`.
    assert "s3cret-value" not in str(inspected)
    assert "s3cret-value" not in str(client.inspect_container(holder))
    script = (
        "id -u; stat -c %a /run/secrets/token; cat /run/secrets/token; echo; touch /run/secrets/x"
    )
    output = client.exec_start(client.exec_create(reader, ["sh", "-c", script])).decode()
    assert output.splitlines()[:3] == ["10001", "444", "s3cret-value"], output
    assert "Read-only file system" in output
    (volume,) = [m["Name"] for m in client.inspect_container(holder)["Mounts"]]

    # A second apply changes nothing: same containers.
    assert up(STACK, _secret_config("s3cret-value"), state=state, log=_quiet).changes == []
    assert client.inspect_container(reader)["Id"] == reader

    # A new value: a new secrets container, so a new reader that reads it; the old volume goes
    # with the old secrets container.
    rotated = up(STACK, _secret_config("r0tated-value"), state=state, log=_quiet)
    replaced = {c.urn.rsplit("::", 1)[1] for c in rotated.changes if c.op == "replace"}
    assert replaced == {"reader-secrets", "reader"}
    new_reader = rotated.outputs["readerId"]
    output = client.exec_start(client.exec_create(new_reader, ["cat", "/run/secrets/token"]))
    assert output.decode() == "r0tated-value"
    assert volume not in {v["Name"] for v in client.volumes()["Volumes"] or []}
