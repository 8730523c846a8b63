"""The prod stack as Swarm services on three Docker-in-Docker nodes (`make e2e-swarm NODES=3`):
placement on labelled nodes, data kept across restarts, replicas spread, the tutorial and 500 jobs,
then node loss (a worker and API node, the database node) and a release rolled out under a steady
probe, each measured and written to artifacts/swarm3-*.json (docs/swarm.md, "Three nodes").

The tests run in file order on one stack; node1 is the only manager and is never lost.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx

from infra.spec import APP_ROLES
from rehearsal.engine import STACK_LABEL
from tests.e2e.stack import ARTIFACTS, SUCCEEDED_LINE, eventually
from tests.e2e_nodes.stack import NodesStack, swarm_nodes, write_report

MANAGER = "swarm-node1"  # also Redis's node (scripts/e2e-swarm-nodes.sh)
DATABASE_NODE = "swarm-node2"
SPARE_NODE = "swarm-node3"  # neither data service nor the manager: the node lost first
ROLES_REPLICAS = {
    "postgres": 1,
    "redis": 1,
    "migrate": 1,
    "api": 2,
    "worker": 4,
    "beat": 1,
    "flower": 1,
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
    # Swarm spreads a service's replicas over the nodes: four workers on all three, the two API
    # replicas (host-published: one per node) on two.
    assert len(nodes_stack.placement("worker")) == 3, nodes_stack.placement("worker")
    assert len(nodes_stack.placement("api")) == 2, nodes_stack.placement("api")
    # The app image, built on the manager, ran on every node (the rehearsal loaded it there).
    image_id = nodes_stack.outputs["imageId"]
    for task in nodes_stack.running_tasks("worker"):
        assert task["Spec"]["ContainerSpec"]["Image"] == image_id


def test_postgres_and_redis_run_on_their_labelled_nodes_with_their_volumes(
    nodes_stack: NodesStack,
) -> None:
    for role, node in (("postgres", DATABASE_NODE), ("redis", MANAGER)):
        assert list(nodes_stack.placement(role)) == [node], role
        volume = f"taskstack-{nodes_stack.name}-{role}-data"
        holders = [
            n for n in nodes_stack.node_names().values() if volume in nodes_stack.node_volumes(n)
        ]
        assert holders == [node], (role, holders)


def test_overlays_are_unencrypted_here_and_reach_across_nodes(nodes_stack: NodesStack) -> None:
    manager = nodes_stack.manager()
    selector = {"label": f"{STACK_LABEL}={nodes_stack.name}"}
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


def test_each_api_replica_answers_on_its_node_s_published_address(nodes_stack: NodesStack) -> None:
    for node in nodes_stack.placement("api"):
        response = httpx.get(f"{nodes_stack.url(node)}/health/ready", timeout=10)
        assert response.status_code == 200, (node, response.text)
    # Clients use the manager's address when it runs a replica, else the first node that does.
    api_nodes = sorted(nodes_stack.placement("api"))
    nodes_stack.entry_node = MANAGER if MANAGER in api_nodes else api_nodes[0]


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
    # And the stack works on them again.
    assert nodes_stack.submit_and_wait(43, within=180)["status"] == "SUCCESS"


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
    if SPARE_NODE not in stack.placement("api"):
        # A start-first update puts the new task on the node without one first.
        stack.service("api").force_update()
        stack.wait_settled("api")
    assert SPARE_NODE in stack.placement("api"), stack.placement("api")
    assert SPARE_NODE in stack.placement("worker"), stack.placement("worker")
    other = next(node for node in sorted(stack.placement("api")) if node != SPARE_NODE)
    stack.entry_node = other
    probe = Probe(f"{stack.url(other)}/health", timeout=1.0, pace=0.05).start()
    ids = stack.submit_jobs(400, first_item=300_000)
    eventually(lambda: stack.job_statuses(ids).get("succeeded", 0) >= 100, within=120, every=0.5)

    killed_at_db = stack.database_now()
    killed_at = time.monotonic()
    swarm_nodes("kill", SPARE_NODE.removeprefix("swarm-node"))
    in_flight = _of_jobs(stack, "count(*)", ids, "status = 'started'")
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
        stack, "id", ids, f"status = 'started' AND started_at < to_timestamp({killed_at_db})"
    ).split()
    statuses = _wait_finished(stack, ids, within=300)
    probe.stop()
    since_kill = f"extract(epoch FROM max(finished_at)) - {killed_at_db}"
    finished = _of_jobs(stack, f"{since_kill}, sum(attempts) - count(*)", ids).split("|")
    cut_off_done = _of_jobs(stack, since_kill, cut_off) if cut_off else None
    swarm_nodes("start", SPARE_NODE.removeprefix("swarm-node"))
    _wait_node(stack, SPARE_NODE, "ready")
    report = {
        "scenario": f"kill {SPARE_NODE} (a worker and an API replica) mid-batch",
        "jobs": len(ids),
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
        "probe": f"GET /health through {other}'s published address every 50 ms, 1 s timeout",
        "probe_during_loss": probe.summary({"200"}, since=killed_at),
    }
    write_report(ARTIFACTS / "swarm3-node-loss-worker-api.json", report)
    assert statuses == {"succeeded": len(ids)}  # 0 lost


def test_losing_the_database_node(nodes_stack: NodesStack) -> None:
    stack = nodes_stack
    entry = next(node for node in sorted(stack.placement("api")) if node != DATABASE_NODE)
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
    eventually(
        lambda: any(s[1] == "202" and s[0] > started_at for s in submit.seen), within=180, every=0.5
    )
    accepting_after = time.monotonic() - started_at
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
        "accepting_again_after_node_start_s": round(accepting_after, 1),
        "post_process_during_outage": outage_outcomes,
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


def test_a_release_across_three_nodes_under_a_steady_probe(nodes_stack: NodesStack) -> None:
    stack = nodes_stack
    for role in APP_ROLES:
        stack.wait_settled(role)
    old_api = {task["ID"] for task in stack.running_tasks("api")}
    entry = MANAGER if MANAGER in stack.placement("api") else sorted(stack.placement("api"))[0]
    stack.entry_node = entry
    probe = Probe(f"{stack.url(entry)}/health", timeout=1.0, pace=0.05).start()
    submit = Probe(f"{stack.url(entry)}/process/{{item}}", method="POST", timeout=5.0).start()
    time.sleep(3)
    started = time.monotonic()
    stack.configure(
        appImageTag="rehearsal-swarm3-2",
        appEnv=json.dumps(
            [
                "JOB_WORK_SECONDS=0.2",
                "REAPER_INTERVAL_SECONDS=5",
                "REAPER_STALE_AFTER_SECONDS=30",
                "VISIBILITY_TIMEOUT_SECONDS=90",
                "READINESS_TIMEOUT_SECONDS=3",
            ]
        ),
    )
    up_seconds = time.monotonic() - started
    for role in APP_ROLES:
        stack.wait_settled(role)
    settled_seconds = time.monotonic() - started
    time.sleep(3)
    probe.stop()
    submit.stop()
    assert not {task["ID"] for task in stack.running_tasks("api")} & old_api
    report = {
        "scenario": "release `up` (new image tag and a changed setting: every app task replaced)",
        "api": "2 replicas, start-first, host-published on their nodes (no proxy yet)",
        "probe": f"via {entry}: GET /health every 50 ms (1 s timeout), POST /process every 100 ms",
        "up_seconds": round(up_seconds, 1),
        "settled_seconds": round(settled_seconds, 1),
        "get_health": probe.summary({"200"}, since=started),
        "post_process": submit.summary({"202"}, since=started),
        "api_placement_after": sorted(stack.placement("api")),
    }
    write_report(ARTIFACTS / "swarm3-release.json", report)
    assert probe.seen
    assert probe.seen[-1][1] == "200"
