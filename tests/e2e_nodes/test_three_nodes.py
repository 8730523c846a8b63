"""The prod stack as Swarm services on three Docker-in-Docker nodes (`make e2e-swarm NODES=3`):
placement on labelled nodes, data kept across restarts, replicas spread, the tutorial and 500 jobs,
then node loss (a worker and API node, the database node), a release rolled out under a steady
probe, and last the database's node lost for good with its disk and PostgreSQL restored on another
node from the repository host; each measured and written to artifacts/swarm3-*.json (docs/swarm.md,
"Three nodes").

The tests run in file order on one stack; node1 is the only manager and is never lost.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import docker
import httpx

from deploy.probe import Probe as ReleaseProbe
from deploy.probe import new_release
from deploy.stack import ARTIFACTS, SUCCEEDED_LINE, eventually
from infra.spec import APP_ROLES, LABEL_STACK
from rehearsal.nodes import LOCAL_ENGINE
from tests.e2e.checks import RPO_SECONDS, Load, archive_everything
from tests.e2e_nodes.stack import NodesStack, swarm_nodes, write_report

MANAGER = "swarm-node1"  # also Redis's and the backup repository's (scripts/e2e-swarm-nodes.sh)
DATABASE_NODE = "swarm-node2"
SPARE_NODE = "swarm-node3"  # neither data service nor the manager: the node lost first
ROLES_REPLICAS = {
    "postgres": 1,
    "redis": 1,
    "migrate": 1,
    "api": 3,
    "worker": 4,
    "beat": 1,
    "flower": 1,
    "proxy": 3,
    "backup": 1,
    "repository": 1,
}


def _wait_finished(stack: NodesStack, ids: list[str], *, within: float) -> dict[str, int]:
    def finished() -> dict[str, int] | None:
        """every job finished"""
        statuses = stack.job_statuses(ids)
        done = statuses.get("succeeded", 0) + statuses.get("failed", 0)
        return statuses if done == len(ids) else None

    return eventually(finished, within=within, every=2)


def _of_jobs(stack: NodesStack, select: str, ids: list[str], where: str = "true") -> str:
    """`SELECT <select> FROM jobs WHERE <where> AND id IN (ids)`; `select` and `where` are the
    test's own text, every id goes through uuid.UUID (nothing but hex digits and dashes)."""
    listed = ",".join(f"'{uuid.UUID(job_id)}'" for job_id in ids)
    return stack.psql(f"SELECT {select} FROM jobs WHERE {where} AND id IN ({listed})")  # noqa: S608


class BatchSubmitter(threading.Thread):
    """POST /process for `count` items from `first_item` on, 8 at a time, in the background, so
    that the batch is still being sent, and run, when a node is lost (sent first, it had finished
    before the kill landed). Keeps the ids of the accepted jobs and counts what failed."""

    def __init__(self, url: str, count: int, first_item: int) -> None:
        super().__init__(daemon=True)
        self.url, self.items = url, range(first_item, first_item + count)
        self.accepted: list[str] = []
        self.failed: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _post(self, client: httpx.Client, item: int) -> None:
        try:
            response = client.post(f"{self.url}/process/{item}")
        except httpx.HTTPError as error:
            outcome: str | None = type(error).__name__
        else:
            outcome = None if response.status_code == 202 else str(response.status_code)
        with self._lock:
            if outcome is None:
                self.accepted.append(str(response.json()["task_id"]))
            else:
                self.failed[outcome] += 1

    def run(self) -> None:
        lanes = [self.items[lane::8] for lane in range(8)]

        def lane_run(items: range) -> None:
            with httpx.Client(timeout=10) as client:
                for item in items:
                    self._post(client, item)

        threads = [threading.Thread(target=lane_run, args=(items,)) for items in lanes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def accepted_now(self) -> list[str]:
        with self._lock:
            return list(self.accepted)


def _wait_node(stack: NodesStack, node: str, state: str, *, within: float = 120) -> None:
    eventually(lambda: stack.node_state(node) == state, within=within, every=0.5)


# -- placement
# -----------------------------------------------------------------------------------------------


def test_every_service_converged_and_replicas_spread_over_the_nodes(
    nodes_stack: NodesStack,
) -> None:
    assert sorted(nodes_stack.node_names().values()) == [MANAGER, DATABASE_NODE, SPARE_NODE]
    for role, replicas in ROLES_REPLICAS.items():
        assert len(nodes_stack.running_tasks(role)) == replicas, role
    # Swarm spreads a service's replicas over the nodes: four workers and the three API tasks on
    # all three; the proxy (host-published) once on every node.
    for role in ("worker", "api", "proxy"):
        assert len(nodes_stack.placement(role)) == 3, (role, nodes_stack.placement(role))
    # The app image, built on the manager, ran on every node (the rehearsal loaded it there).
    image_id = nodes_stack.outputs["imageId"]
    for task in nodes_stack.running_tasks("worker"):
        assert task["Spec"]["ContainerSpec"]["Image"] == image_id


def test_postgres_and_redis_run_on_their_labelled_nodes_with_their_volumes(
    nodes_stack: NodesStack,
) -> None:
    for role, node, key in (
        ("postgres", DATABASE_NODE, "postgres"),
        ("redis", MANAGER, "redis"),
        # The backup repository off the database's node; the backup role beside PostgreSQL.
        ("repository", MANAGER, "backup"),
    ):
        assert list(nodes_stack.placement(role)) == [node], role
        volume = f"taskstack-{nodes_stack.name}-{key}-data"
        holders = [
            n for n in nodes_stack.node_names().values() if volume in nodes_stack.node_volumes(n)
        ]
        assert holders == [node], (role, holders)


def test_overlays_are_unencrypted_here_and_reach_across_nodes(nodes_stack: NodesStack) -> None:
    manager = nodes_stack.manager()
    selector = {"label": f"{LABEL_STACK}={nodes_stack.name}"}
    networks = manager.networks.list(filters=selector)
    assert len(networks) == 2
    for network in networks:
        network.reload()
        assert network.attrs["Driver"] == "overlay"
        # overlayEncryption false: this kernel has no IPsec ESP (docs/swarm.md).
        assert "encrypted" not in (network.attrs.get("Options") or {})
    # An API task on another node than PostgreSQL's resolves and reaches it over the data overlay.
    api_tasks = [
        task
        for task in nodes_stack.running_tasks("api")
        if nodes_stack.task_node(task) != DATABASE_NODE
    ]
    assert api_tasks
    code, output = nodes_stack.exec_in_task(
        api_tasks[0],
        [
            "python",
            "-c",
            "import socket; s = socket.create_connection(('postgres', 5432), timeout=5); "
            "print(s.getpeername()[0])",
        ],
    )
    assert code == 0, output


def test_the_api_answers_through_every_node_s_published_address(nodes_stack: NodesStack) -> None:
    # The front door on each node balances over the API tasks of all nodes: each node's address
    # reaches each API task.
    for node in (MANAGER, DATABASE_NODE, SPARE_NODE):
        for _ in range(6):
            response = httpx.get(f"{nodes_stack.url(node)}/health/ready", timeout=10)
            assert response.status_code == 200, (node, response.text)
    nodes_stack.entry_node = MANAGER


# -- the tutorial and a batch
# ----------------------------------------------------------------------------------------


def test_tutorial_flow(nodes_stack: NodesStack) -> None:
    body = nodes_stack.submit_and_wait(42)
    assert body["result"] == {"item_id": 42, "status": "processed"}
    with nodes_stack.api() as client:
        assert client.get(f"/task/{uuid.uuid4()}").status_code == 404


def test_500_jobs_run_on_workers_on_every_node(nodes_stack: NodesStack) -> None:
    ids = nodes_stack.submit_jobs(500, first_item=1000)
    assert _wait_finished(nodes_stack, ids, within=300) == {"succeeded": 500}
    ours = set(ids)
    done_by_node: Counter[str] = Counter()
    for task in nodes_stack.running_tasks("worker"):
        done = set(SUCCEEDED_LINE.findall(nodes_stack.task_logs(task))) & ours
        done_by_node[nodes_stack.task_node(task)] += len(done)
    assert set(done_by_node) == {MANAGER, DATABASE_NODE, SPARE_NODE}, done_by_node
    assert all(done_by_node.values()), done_by_node
    assert sum(done_by_node.values()) >= 500


def test_postgres_and_redis_come_back_on_their_nodes_with_their_data(
    nodes_stack: NodesStack,
) -> None:
    jobs_before = nodes_stack.psql("SELECT count(*) FROM jobs")
    marker = uuid.uuid4().hex
    assert nodes_stack.redis_cli("SET", "taskstack-rehearsal-marker", marker) == "OK"
    for role in ("postgres", "redis"):
        old = {task["ID"] for task in nodes_stack.running_tasks(role)}
        nodes_stack.service(role).force_update()  # a new task, as a restart or a release makes

        def replaced(role: str = role, old: set[str] = old) -> bool:
            """a new task runs"""
            now = {t["ID"] for t in nodes_stack.running_tasks(role)}
            return bool(now) and not now & old

        eventually(replaced, within=180)
    assert list(nodes_stack.placement("postgres")) == [DATABASE_NODE]
    assert list(nodes_stack.placement("redis")) == [MANAGER]
    eventually(lambda: nodes_stack.psql("SELECT count(*) FROM jobs") == jobs_before, within=60)
    assert nodes_stack.redis_cli("GET", "taskstack-rehearsal-marker") == marker
    # And the stack works on them again. Each API process's pooled connections to the old Redis
    # task fail once (503 with Retry-After, the job recorded for the reaper): a client retries.
    with nodes_stack.api() as client:

        def accepted() -> str | None:
            """POST /process/43 accepted"""
            response = client.post("/process/43")
            assert response.status_code in (202, 503), response.text
            return str(response.json()["task_id"]) if response.status_code == 202 else None

        task_id = eventually(accepted, within=60, every=0.2)
    assert _wait_finished(nodes_stack, [task_id], within=120) == {"succeeded": 1}


# -- node loss
# -----------------------------------------------------------------------------------------------


@dataclass
class Probe:
    """A client polling one URL at a steady pace; what it saw, by monotonic time."""

    url: str
    method: str = "GET"
    timeout: float = 2.0
    pace: float = 0.1
    seen: list[tuple[float, str, float]] = field(default_factory=list)  # (at, outcome, seconds)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        item = 500_000 + int(time.monotonic() * 1000) % 100_000 * 10
        with httpx.Client(timeout=self.timeout) as client:
            while not self._stop.is_set():
                item += 1
                at = time.monotonic()
                url = self.url.replace("{item}", str(item))
                try:
                    outcome = str(client.request(self.method, url).status_code)
                except httpx.TimeoutException:
                    outcome = "timeout"
                except httpx.HTTPError as error:
                    outcome = type(error).__name__
                self.seen.append((at, outcome, time.monotonic() - at))
                time.sleep(self.pace)

    def failures(self, ok: set[str], since: float = 0.0) -> list[tuple[float, str, float]]:
        return [s for s in self.seen if s[0] >= since and s[1] not in ok]

    def summary(self, ok: set[str], since: float) -> dict[str, object]:
        failed = self.failures(ok, since)
        return {
            "requests": len([s for s in self.seen if s[0] >= since]),
            "failed": len(failed),
            "outcomes": dict(Counter(s[1] for s in self.seen if s[0] >= since)),
            "first_failure_after_s": round(failed[0][0] - since, 2) if failed else None,
            "last_failure_after_s": round(failed[-1][0] - since, 2) if failed else None,
            "slowest_answer_s": round(
                max((s[2] for s in self.seen if s[0] >= since), default=0), 2
            ),
        }


def test_losing_a_node_with_a_worker_and_an_api_replica(nodes_stack: NodesStack) -> None:
    stack = nodes_stack
    assert SPARE_NODE in stack.placement("api"), stack.placement("api")
    assert SPARE_NODE in stack.placement("worker"), stack.placement("worker")
    other = MANAGER  # clients go through another node's front door
    stack.entry_node = other
    probe = Probe(f"{stack.url(other)}/health", timeout=2.0, pace=0.05).start()
    poster = Probe(f"{stack.url(other)}/process/{{item}}", method="POST", timeout=5.0).start()
    batch = BatchSubmitter(stack.url(other), 1_200, first_item=300_000)
    batch.start()
    eventually(
        lambda: stack.job_statuses(batch.accepted_now()).get("succeeded", 0) >= 100,
        within=120,
        every=0.5,
    )

    killed_at_db = stack.database_now()
    killed_at = time.monotonic()
    swarm_nodes("kill", SPARE_NODE.removeprefix("swarm-node"))
    sent_at_kill = batch.accepted_now()
    in_flight = _of_jobs(stack, "count(*)", sent_at_kill, "status = 'started'")
    _wait_node(stack, SPARE_NODE, "down")
    down_after = time.monotonic() - killed_at

    def rescheduled(role: str) -> bool:
        placed = stack.placement(role)
        return SPARE_NODE not in placed and sum(map(len, placed.values())) == ROLES_REPLICAS[role]

    eventually(lambda: rescheduled("worker"), within=180, every=0.5)
    workers_back_after = time.monotonic() - killed_at
    eventually(lambda: rescheduled("api"), within=180, every=0.5)
    api_back_after = time.monotonic() - killed_at
    # Jobs cut off on the lost node's workers: still `started` by a run that began before the kill.
    time.sleep(3)
    cut_off = _of_jobs(
        stack,
        "id",
        sent_at_kill,
        f"status = 'started' AND started_at < to_timestamp({killed_at_db})",
    ).split()
    batch.join(timeout=300)
    assert not batch.is_alive(), "the batch was not sent within 300 s"
    ids = batch.accepted_now()
    statuses = _wait_finished(stack, ids, within=300)
    probe.stop()
    poster.stop()
    since_kill = f"extract(epoch FROM max(finished_at)) - {killed_at_db}"
    finished = _of_jobs(stack, f"{since_kill}, sum(attempts) - count(*)", ids).split("|")
    cut_off_done = _of_jobs(stack, since_kill, cut_off) if cut_off else None
    swarm_nodes("start", SPARE_NODE.removeprefix("swarm-node"))
    _wait_node(stack, SPARE_NODE, "ready")
    report = {
        "scenario": f"kill {SPARE_NODE} (a worker and an API replica) mid-batch",
        "jobs": len(ids),
        "jobs_accepted_before_the_kill": len(sent_at_kill),
        "batch_requests_failed": dict(batch.failed),
        "statuses": statuses,
        "lost": len(ids) - statuses.get("succeeded", 0),
        "started_when_killed": int(in_flight),
        "cut_off_jobs": len(cut_off),
        "cut_off_jobs_finished_after_kill_s": round(float(cut_off_done), 1)
        if cut_off_done
        else None,
        "batch_finished_after_kill_s": round(float(finished[0]), 1),
        "duplicated_deliveries": int(finished[1]),
        "node_down_after_s": round(down_after, 1),
        "workers_rescheduled_after_s": round(workers_back_after, 1),
        "api_replica_rescheduled_after_s": round(api_back_after, 1),
        "probe": f"through {other}'s front door: GET /health every 50 ms (2 s timeout), "
        "POST /process every 100 ms (5 s timeout)",
        "get_health_from_kill": probe.summary({"200"}, since=killed_at),
        "post_process_from_kill": poster.summary({"202"}, since=killed_at),
    }
    write_report(ARTIFACTS / "swarm3-node-loss-worker-api.json", report)
    assert statuses == {"succeeded": len(ids)}  # 0 lost


def test_losing_the_database_node(nodes_stack: NodesStack) -> None:
    stack = nodes_stack
    entry = MANAGER
    stack.entry_node = entry
    before = stack.submit_jobs(100, first_item=400_000)
    rows_before = stack.psql("SELECT count(*) FROM jobs")
    submit = Probe(f"{stack.url(entry)}/process/{{item}}", method="POST", timeout=5.0).start()
    ready = Probe(f"{stack.url(entry)}/health/ready", timeout=5.0, pace=0.2).start()
    time.sleep(2)
    killed_at = time.monotonic()
    swarm_nodes("kill", DATABASE_NODE.removeprefix("swarm-node"))
    _wait_node(stack, DATABASE_NODE, "down")
    down_after = time.monotonic() - killed_at
    time.sleep(max(0.0, 30 - (time.monotonic() - killed_at)))  # 30 s without the database
    started_at = time.monotonic()
    swarm_nodes("start", DATABASE_NODE.removeprefix("swarm-node"))
    _wait_node(stack, DATABASE_NODE, "ready")
    eventually(lambda: list(stack.placement("postgres")) == [DATABASE_NODE], within=180, every=0.5)
    postgres_back_after = time.monotonic() - started_at
    deadline = time.monotonic() + 180
    while not any(s[1] == "202" and s[0] > started_at for s in submit.seen):
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    accepting_after = time.monotonic() - started_at
    accepting = time.monotonic() <= deadline
    time.sleep(3)
    submit.stop()
    ready.stop()
    outage = [s for s in submit.seen if killed_at <= s[0] <= started_at + accepting_after]
    outage_outcomes = dict(Counter(s[1] for s in outage))
    accepted = [s for s in submit.seen if s[1] == "202"]
    # Nothing lost: the rows from before are all there, and every job accepted finishes.
    eventually(lambda: int(stack.psql("SELECT count(*) FROM jobs")) >= int(rows_before), within=60)
    statuses = _wait_finished(stack, before, within=300)
    report = {
        "scenario": f"kill {DATABASE_NODE} (PostgreSQL's node) for 30 s, then start it",
        "probe": f"POST /process every 100 ms, GET /health/ready every 200 ms, via {entry}, 5 s",
        "node_down_after_s": round(down_after, 1),
        "postgres_running_after_node_start_s": round(postgres_back_after, 1),
        "accepting_again_after_node_start_s": round(accepting_after, 1) if accepting else None,
        "post_process_during_outage": outage_outcomes,
        "post_process_from_kill": submit.summary({"202"}, since=killed_at),
        "post_process_slowest_answer_during_outage_s": round(
            max((s[2] for s in outage), default=0), 2
        ),
        "health_ready_during_outage": dict(
            Counter(s[1] for s in ready.seen if killed_at <= s[0] <= started_at + accepting_after)
        ),
        "jobs_accepted_before_kill": len(before),
        "jobs_accepted_before_kill_statuses": statuses,
        "jobs_accepted_by_the_probe": len(accepted),
    }
    write_report(ARTIFACTS / "swarm3-node-loss-database.json", report)
    assert accepting, "POST /process did not answer 202 within 180 s of the node's return"
    assert "500" not in outage_outcomes, report
    assert statuses == {"succeeded": len(before)}
    # Every job accepted so far (the probe's 202s included) finishes: none stays unfinished.
    eventually(
        lambda: (
            stack.psql("SELECT count(*) FROM jobs WHERE status NOT IN ('succeeded', 'failed')")
            == "0"
        ),
        within=180,
        every=2,
    )
    assert stack.psql("SELECT count(*) FROM jobs WHERE status = 'failed'") == "0"


# -- a release under a steady probe
# --------------------------------------------------------------------------------------


def test_a_new_image_across_three_nodes_under_a_steady_probe(nodes_stack: NodesStack) -> None:
    stack = nodes_stack
    # Not the migration: its idle task (restart condition `none`) is not rescheduled when its node
    # is lost, so after the node-loss tests it may have none; the new image's `up` starts one.
    migrate_tasks_before = len(stack.running_tasks("migrate"))
    for role in (*APP_ROLES, "proxy"):
        if role != "migrate":
            stack.wait_settled(role)
    old_api = {task["ID"] for task in stack.running_tasks("api")}
    image_before = stack.outputs["imageId"]
    stack.entry_node = MANAGER
    with new_release(), ReleaseProbe(stack.api_url) as probe:
        time.sleep(2)  # requests and jobs in flight before the deployment starts
        started = time.monotonic()
        stack.up()
        up_seconds = time.monotonic() - started
        for role in APP_ROLES:
            stack.wait_settled(role)
        settled_seconds = time.monotonic() - started
        time.sleep(2)  # and after it
    assert stack.outputs["imageId"] != image_before
    assert not {task["ID"] for task in stack.running_tasks("api")} & old_api
    statuses = _wait_finished(stack, probe.report.accepted, within=300)
    report = {
        "scenario": "`up` with a new app image (new build context) on three nodes",
        "api": "3 tasks, start-first, behind the proxy on every node (host-published)",
        "probe": f"through {MANAGER}'s front door: GET /health every 20 ms, POST /process every "
        "50 ms (deploy/probe.py)",
        "migrate_tasks_before_up": migrate_tasks_before,
        "up_seconds": round(up_seconds, 1),
        "settled_seconds": round(settled_seconds, 1),
        **probe.report.summary(),
        "failed_gets": dict(Counter(probe.report.failed_gets)),
        "failed_posts": dict(Counter(probe.report.failed_posts)),
        "accepted_jobs_statuses": statuses,
        "api_placement_after": {n: len(t) for n, t in stack.placement("api").items()},
    }
    write_report(ARTIFACTS / "swarm3-new-image.json", report)
    assert statuses == {"succeeded": len(probe.report.accepted)}  # 0 lost


# -- the database's node lost with its disk, PostgreSQL restored on another node
# --------------------------------------------------------------------------------------


def _remove_node_with_its_disk(node: str) -> None:
    """The node gone for good: its container and the volume that holds its engine's data (every
    volume of every task it ran), as when a host and its disk are lost."""
    local = docker.DockerClient(base_url=LOCAL_ENGINE)
    local.containers.get(node).remove(force=True)
    local.volumes.get(node).remove(force=True)


def test_losing_the_database_node_with_its_disk_and_restoring_on_another(
    nodes_stack: NodesStack,
) -> None:
    stack = nodes_stack
    stack.entry_node = MANAGER

    def first_full_backup() -> bool:
        """the repository host holds a full backup"""
        return stack.psql("SELECT count(*) FROM backup_status WHERE kind = 'full'") == "1"

    eventually(first_full_backup, within=600, every=5)
    # Archiving live before the load: after the earlier tests' restarts of node2 it has been seen
    # to push nothing for minutes (RELIABILITY.md); how long it took to catch up is reported.
    archive_caught_up_s = archive_everything(stack, within=600)
    archiver = "SELECT archived_count, last_archived_wal, last_archived_time, failed_count, "
    archiver += "last_failed_wal, last_failed_time FROM pg_stat_archiver"
    archived_before = stack.psql(archiver, user="postgres")
    # At a random moment, with more than the promised minute of committed jobs behind it.
    loss_after = random.uniform(70, 90)
    with Load(stack.url(MANAGER), 700_001, {}) as load:
        time.sleep(loss_after)
        lost_at = time.time()
        archived_at_loss = stack.psql(archiver, user="postgres")
        _remove_node_with_its_disk(DATABASE_NODE)
        time.sleep(5)  # the clients keep coming; the API refuses them now
    _wait_node(stack, DATABASE_NODE, "down")
    # What the operator does (docs/backup.md, "Restore"): the lost node out of the swarm, another
    # node labelled for PostgreSQL, then one `up` that pins PostgreSQL there and restores it.
    manager = stack.manager()
    (lost,) = [
        n for n in manager.nodes.list() if n.attrs["Description"]["Hostname"] == DATABASE_NODE
    ]
    lost.remove(force=True)
    (spare,) = [n for n in manager.nodes.list() if n.attrs["Description"]["Hostname"] == SPARE_NODE]
    spec = spare.attrs["Spec"]
    spec["Labels"] = {**spec.get("Labels", {}), "taskstack.postgres": "restored"}
    spare.update(spec)
    started = time.monotonic()
    deployed = stack.configure(
        postgresNodeLabels='["taskstack.postgres=restored"]', restoreTarget="latest"
    )
    assert deployed.ok, deployed.log[-3000:]

    def ready() -> bool:
        """the API is ready on the restored database"""
        try:
            answer = httpx.get(f"{stack.url(MANAGER)}/health/ready", timeout=5)
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    eventually(ready, within=600, every=1)
    restore_seconds = round(time.monotonic() - started, 1)
    assert list(stack.placement("postgres")) == [SPARE_NODE]
    assert list(stack.placement("repository")) == [MANAGER]

    present = set(stack.psql("SELECT id FROM jobs").split())
    old_enough = [a for a in load.accepted if a.answered_at <= lost_at - RPO_SECONDS]
    missing_old = [a.task_id for a in old_enough if a.task_id not in present]
    lost_jobs = [a for a in load.accepted if a.task_id not in present]
    ages = [lost_at - a.answered_at for a in lost_jobs]
    statuses = stack.job_statuses([a.task_id for a in old_enough])
    # The stack serves and drains again on the restored database, on its new node.
    after = stack.submit_jobs(50, first_item=800_000)
    after_statuses = _wait_finished(stack, after, within=300)
    report = {
        "scenario": f"{DATABASE_NODE} (PostgreSQL's node) and its disk removed under "
        f"{len(load.accepted)} accepted POSTs, PostgreSQL restored to latest on {SPARE_NODE} "
        f"from the repository host on {MANAGER}",
        "loss_after_s": round(loss_after, 1),
        "accepted": len(load.accepted),
        "accepted_a_minute_before": len(old_enough),
        "missing_of_those": len(missing_old),
        "lost": len(lost_jobs),
        "newest_lost_age_s": round(min(ages), 1) if ages else None,
        "oldest_lost_age_s": round(max(ages), 1) if ages else None,
        "restored_statuses": statuses,
        "restore_up_to_ready_s": restore_seconds,
        "jobs_after_restore": after_statuses,
        "archive_caught_up_before_load_s": archive_caught_up_s,
        "pg_stat_archiver_before_load": archived_before,
        "pg_stat_archiver_at_loss": archived_at_loss,
    }
    if missing_old:
        (task,) = stack.running_tasks("postgres")
        recovery = [
            line
            for line in stack.task_logs(task).splitlines()
            if any(word in line for word in ("restore", "recovery", "timeline", "redo", "ERROR"))
        ]
        report["restore_log"] = recovery[-30:]
    write_report(ARTIFACTS / "swarm3-database-node-restored.json", report)
    assert old_enough, "no job was accepted a minute before the loss"
    assert missing_old == [], report
    assert sum(statuses.values()) == len(old_enough)
    assert after_statuses == {"succeeded": len(after)}
