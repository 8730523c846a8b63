"""Monitoring configuration (infra/monitoring.py): the rendered files as Prometheus's and
Alertmanager's own tools read them (promtool, amtool in their images, `docker run --rm`), the rules
proven alert by alert (tests/infra/alert_rules_test.yml), and the deterministic bcrypt hash.

The tool checks need a Docker engine with the images `prom/prometheus:v2.53.3` and
`prom/alertmanager:v0.28.1`; without them they fail, naming the command that provides them.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from app.config import Settings
from infra import monitoring, proxy
from infra.config import StackConfig
from infra.monitoring import BasicAuth, MonitoringSettings
from infra.spec.app_roles import API_PORT, WORKER_METRICS_PORT

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_TEST = Path(__file__).with_name("alert_rules_test.yml")
OBSERVABILITY_DOC = REPO_ROOT / "docs" / "observability.md"

PROMETHEUS_IMAGE = "prom/prometheus:v2.53.3"
ALERTMANAGER_IMAGE = "prom/alertmanager:v0.28.1"
PROVIDED_BY = "bash ../shared/offline-docker/engine && bash ../shared/offline-docker/images"
NOBODY = "65534:65534"  # the user both images run as

# The thresholds alert_rules_test.yml is written for (the prod defaults today, spelled out so that
# a change of default does not silently change what the unit tests prove).
RULE_TEST_SETTINGS = MonitoringSettings(
    queue_depth_floor=100,
    oldest_pending_job_seconds=300,
    job_failure_ratio=0.05,
    job_failure_min_finished=20,
    api_5xx_ratio=0.01,
    api_5xx_min_requests=100,
    api_latency_p99_seconds=1.0,
    outbox_oldest_seconds=30,
)

PROMETHEUS_YML = "/etc/prometheus/prometheus.yml"
WEB_YML = "/etc/prometheus/web.yml"
SELF_AUTH_FILE = "/run/secrets/prometheus-password"
ALERTMANAGER_AUTH_FILE = "/run/secrets/alertmanager-password"
WEBHOOK_URL = "/run/secrets/alertmanager-webhook-url"
SELF_SECRET = "self-secret"  # noqa: S105 - the test's own, in a temporary file
SELF_AUTH = BasicAuth("prometheus", SELF_AUTH_FILE)
ALERTMANAGER_AUTH = BasicAuth("alertmanager", ALERTMANAGER_AUTH_FILE)

ALERTS = {
    "NoWorkerAlive",
    "QueueDepthRising",
    "OldestPendingJobTooOld",
    "JobFailureRatioHigh",
    "Api5xxRatioHigh",
    "ApiLatencyP99High",
    "OutboxBacklogOld",
    "PostgresDown",
    "RedisDown",
    "TargetDown",
    "WalArchiveBehind",
    "BackupFullTooOld",
    "BackupMissing",
}


# --- the engine and the tools ---------------------------------------------------------------------


def _missing(what: str) -> str:
    return f"{what}; provided by: {PROVIDED_BY}"


@pytest.fixture(scope="module")
def docker_cli() -> str:
    """The Docker CLI, once the engine answers and both images are there; otherwise a failure
    (never a skip) naming what provides them."""
    cli = shutil.which("docker") or "/usr/bin/docker"
    if not Path(cli).exists():
        pytest.fail(_missing("no Docker CLI (docker on PATH or /usr/bin/docker)"))
    info = subprocess.run([cli, "info"], capture_output=True, text=True, timeout=30, check=False)
    if info.returncode != 0:
        pytest.fail(_missing(f"no Docker engine answers `docker info`: {info.stderr.strip()}"))
    for image in (PROMETHEUS_IMAGE, ALERTMANAGER_IMAGE):
        found = subprocess.run(
            [cli, "image", "inspect", image], capture_output=True, timeout=30, check=False
        )
        if found.returncode != 0:
            pytest.fail(_missing(f"the image {image} is not on the engine (nothing is pulled)"))
    return cli


def docker_run(
    cli: str,
    image: str,
    entrypoint: str,
    args: Sequence[str],
    mounts: dict[Path, str],
    *,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`docker run --rm` of one tool as nobody, without a network, files mounted read-only."""
    volumes = [arg for host, inside in mounts.items() for arg in ("-v", f"{host}:{inside}:ro")]
    command = [cli, "run", "--rm", "--network", "none", "--user", NOBODY, *volumes]
    command += ["--entrypoint", entrypoint, image, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def assert_ok(result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(result.args)}\n{output}"
    return output


def write(directory: Path, name: str, text: str) -> Path:
    """A file nobody (65534) can read in the container: mode 0644, its directory 0755."""
    directory.chmod(0o755)
    path = directory / name
    path.write_text(text)
    path.chmod(0o644)
    return path


def prometheus_files(
    tmp_path: Path, target: monitoring.Target, *, auth: bool, settings: MonitoringSettings
) -> dict[Path, str]:
    """The rendered prometheus.yml and every file it names, host path -> path in the container."""
    config = monitoring.prometheus_config(
        settings,
        target,
        self_auth=SELF_AUTH if auth else None,
        alertmanager_auth=ALERTMANAGER_AUTH if auth else None,
    )
    mounts = {
        write(tmp_path, "prometheus.yml", config): PROMETHEUS_YML,
        write(tmp_path, "rules.yml", monitoring.alert_rules(settings)): monitoring.RULES_PATH,
    }
    if auth:
        mounts[write(tmp_path, "self-password", f"{SELF_SECRET}\n")] = SELF_AUTH_FILE
        mounts[write(tmp_path, "am-password", "am-secret\n")] = ALERTMANAGER_AUTH_FILE
    return mounts


# --- prometheus.yml -------------------------------------------------------------------------------


def parsed_prometheus(target: monitoring.Target, **kwargs: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        monitoring.prometheus_config(MonitoringSettings(), target, **kwargs)
    )
    return loaded


def test_intervals_and_rules_path_come_from_the_settings() -> None:
    settings = MonitoringSettings(scrape_interval="30s", evaluation_interval="1m")
    config = yaml.safe_load(
        monitoring.prometheus_config(settings, "docker", rules_path="/etc/p/r.yml")
    )
    assert config["global"] == {"scrape_interval": "30s", "evaluation_interval": "1m"}
    assert config["rule_files"] == ["/etc/p/r.yml"]
    assert parsed_prometheus("docker")["global"] == {
        "scrape_interval": "15s",
        "evaluation_interval": "15s",
    }


@pytest.mark.parametrize(
    ("target", "prefix"), [("docker", ""), ("swarm", "tasks.")], ids=["docker", "swarm"]
)
def test_every_copy_of_every_role_is_found_by_dns(target: monitoring.Target, prefix: str) -> None:
    config = parsed_prometheus(target)
    found = {}
    for job in config["scrape_configs"]:
        if job["job_name"] == "prometheus":
            assert job["static_configs"] == [{"targets": ["localhost:9090"]}]
            continue
        (sd,) = job["dns_sd_configs"]
        assert sd["type"] == "A"
        (name,) = sd["names"]
        found[job["job_name"]] = (name, sd["port"])
        assert "static_configs" not in job
    # The contract of docs/observability.md.
    assert found == {
        "api": (f"{prefix}api", 8000),
        "worker": (f"{prefix}worker", 9808),
        "proxy": (f"{prefix}proxy", 8405),
        "postgres-exporter": (f"{prefix}postgres-exporter", 9187),
        "redis-exporter": (f"{prefix}redis-exporter", 9121),
        "alertmanager": (f"{prefix}alertmanager", 9093),
    }
    (alerting,) = config["alerting"]["alertmanagers"]
    (sd,) = alerting["dns_sd_configs"]
    assert (sd["names"], sd["port"], sd["type"]) == ([f"{prefix}alertmanager"], 9093, "A")


def test_credentials_are_named_by_file_never_written() -> None:
    config = parsed_prometheus("swarm", self_auth=SELF_AUTH, alertmanager_auth=ALERTMANAGER_AUTH)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["prometheus"]["basic_auth"] == {
        "username": "prometheus",
        "password_file": SELF_AUTH_FILE,
    }
    alertmanager = {"username": "alertmanager", "password_file": ALERTMANAGER_AUTH_FILE}
    assert jobs["alertmanager"]["basic_auth"] == alertmanager
    assert config["alerting"]["alertmanagers"][0]["basic_auth"] == alertmanager
    for name in ("api", "worker", "proxy", "postgres-exporter", "redis-exporter"):
        assert "basic_auth" not in jobs[name]
    # Without auth, none is asked for.
    plain = parsed_prometheus("docker")
    assert "basic_auth" not in str(plain)
    with pytest.raises(ValueError, match="unknown target"):
        monitoring.prometheus_config(MonitoringSettings(), "kubernetes")  # type: ignore[arg-type]


@pytest.mark.parametrize("auth", [False, True], ids=["open", "basic-auth"])
@pytest.mark.parametrize("target", ["docker", "swarm"])
def test_promtool_accepts_the_config(
    docker_cli: str, tmp_path: Path, target: monitoring.Target, auth: bool
) -> None:
    mounts = prometheus_files(tmp_path, target, auth=auth, settings=MonitoringSettings())
    output = assert_ok(
        docker_run(
            docker_cli,
            PROMETHEUS_IMAGE,
            "/bin/promtool",
            ["check", "config", PROMETHEUS_YML],
            mounts,
        )
    )
    assert f"SUCCESS: {len(ALERTS)} rules found" in output


def test_prometheus_scrapes_itself_through_its_basic_auth(docker_cli: str, tmp_path: Path) -> None:
    """Prometheus behind the rendered web config, its self-scrape authenticated from the
    password file: `up{job="prometheus"}` is 1, and a query without the password is refused."""
    mounts = prometheus_files(
        tmp_path,
        "docker",
        auth=True,
        settings=MonitoringSettings(scrape_interval="1s", evaluation_interval="1s"),
    )
    web = monitoring.web_config({"prometheus": monitoring.bcrypt_hash(SELF_SECRET)})
    mounts[write(tmp_path, "web.yml", web)] = WEB_YML
    client = f"basic_auth:\n  username: prometheus\n  password_file: {SELF_AUTH_FILE}\n"
    mounts[write(tmp_path, "client.yml", client)] = "/etc/prometheus/client.yml"
    query = (
        "/bin/promtool query instant --http.config.file=/etc/prometheus/client.yml"
        " http://localhost:9090 'up{job=\"prometheus\"}'"
    )
    script = (
        f"/bin/prometheus --config.file={PROMETHEUS_YML} --web.config.file={WEB_YML}"
        " --storage.tsdb.path=/tmp/data --log.level=error 2>/dev/null &"
        " for i in $(seq 40); do"
        f"   out=$({query} 2>&1); case $out in *' => 1 @'*) break;; esac; sleep 0.5;"
        " done;"
        ' echo "with the password: $out";'
        ' echo "without: $(/bin/promtool query instant http://localhost:9090 up 2>&1)"'
    )
    started = time.monotonic()
    output = assert_ok(
        docker_run(docker_cli, PROMETHEUS_IMAGE, "/bin/sh", ["-c", script], mounts, timeout=90)
    )
    assert time.monotonic() - started < 60
    assert re.search(r'with the password: up\{.*job="prometheus".*\} => 1 @', output), output
    assert "without: " in output
    assert "401" in output.split("without: ", 1)[1], output


# --- rules.yml ------------------------------------------------------------------------------------


def parsed_rules(settings: MonitoringSettings) -> dict[str, dict[str, Any]]:
    (group,) = yaml.safe_load(monitoring.alert_rules(settings))["groups"]
    return {rule["alert"]: rule for rule in group["rules"]}


def test_every_alert_has_a_severity_a_summary_and_its_value() -> None:
    rules = parsed_rules(MonitoringSettings())
    assert set(rules) == ALERTS
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert rule["annotations"]["summary"], name
        assert "$value" in rule["annotations"]["description"], name
    assert rules["NoWorkerAlive"]["for"] == "1m"
    assert rules["TargetDown"]["for"] == "2m"
    assert rules["QueueDepthRising"]["for"] == "5m"


def test_thresholds_come_from_the_settings() -> None:
    settings = MonitoringSettings(
        queue_depth_floor=250,
        oldest_pending_job_seconds=900,
        job_failure_ratio=0.125,
        job_failure_min_finished=7,
        api_5xx_ratio=0.025,
        api_5xx_min_requests=333,
        api_latency_p99_seconds=0.75,
        outbox_oldest_seconds=45,
    )
    expr = {name: rule["expr"] for name, rule in parsed_rules(settings).items()}
    assert "> 250" in expr["QueueDepthRising"]
    assert "> 900" in expr["OldestPendingJobTooOld"]
    assert "> 0.125" in expr["JobFailureRatioHigh"]
    assert ">= 7" in expr["JobFailureRatioHigh"]
    assert "> 0.025" in expr["Api5xxRatioHigh"]
    assert ">= 333" in expr["Api5xxRatioHigh"]
    assert ") > 0.75" in expr["ApiLatencyP99High"]
    assert "> 45" in expr["OutboxBacklogOld"]
    # Stack-wide gauges are served by every API copy: each rule takes their max.
    for name in ("NoWorkerAlive", "OldestPendingJobTooOld", "OutboxBacklogOld"):
        assert "max(" in expr[name], name


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scrape_interval", "15"),
        ("evaluation_interval", "0s"),
        ("group_wait", "soon"),
        ("job_failure_ratio", 1.5),
        ("api_5xx_ratio", 0),
        ("oldest_pending_job_seconds", 0),
        ("queue_depth_floor", -1),
    ],
)
def test_settings_refuse_what_prometheus_would_not_read(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        MonitoringSettings(**{field: value})  # type: ignore[arg-type]


def test_promtool_checks_and_unit_tests_the_rules(docker_cli: str, tmp_path: Path) -> None:
    """alert_rules_test.yml: each alert fires when it should and not when it should not."""
    rules = write(tmp_path, "rules.yml", monitoring.alert_rules(RULE_TEST_SETTINGS))
    write(tmp_path, RULES_TEST.name, RULES_TEST.read_text())
    output = assert_ok(
        docker_run(
            docker_cli,
            PROMETHEUS_IMAGE,
            "/bin/promtool",
            ["check", "rules", "/rules/rules.yml"],
            {rules: "/rules/rules.yml"},
        )
    )
    assert f"SUCCESS: {len(ALERTS)} rules found" in output
    output = assert_ok(
        docker_run(
            docker_cli,
            PROMETHEUS_IMAGE,
            "/bin/sh",
            ["-c", f"cd /rules && /bin/promtool test rules {RULES_TEST.name}"],
            {tmp_path: "/rules"},
        )
    )
    assert "SUCCESS" in output


def test_the_unit_tests_cover_every_alert() -> None:
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for group in tests:
        for case in group["alert_rule_test"]:
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    assert fired == ALERTS
    assert quiet == ALERTS


# --- alertmanager.yml -----------------------------------------------------------------------------


def test_alertmanager_routes_everything_to_the_webhook_file() -> None:
    settings = MonitoringSettings(group_wait="30s", group_interval="10m", repeat_interval="12h")
    config = yaml.safe_load(monitoring.alertmanager_config(settings, webhook_url_file=WEBHOOK_URL))
    assert config["route"] == {
        "receiver": "webhook",
        "group_by": ["alertname"],
        "group_wait": "30s",
        "group_interval": "10m",
        "repeat_interval": "12h",
    }
    assert config["receivers"] == [
        {"name": "webhook", "webhook_configs": [{"url_file": WEBHOOK_URL, "send_resolved": True}]}
    ]
    defaults = yaml.safe_load(
        monitoring.alertmanager_config(MonitoringSettings(), webhook_url_file=WEBHOOK_URL)
    )
    assert defaults["route"]["group_wait"] == "10s"


def test_amtool_accepts_the_config(docker_cli: str, tmp_path: Path) -> None:
    config = monitoring.alertmanager_config(MonitoringSettings(), webhook_url_file=WEBHOOK_URL)
    mounts = {
        write(tmp_path, "alertmanager.yml", config): "/etc/alertmanager/alertmanager.yml",
        write(tmp_path, "url", "http://receiver.invalid/hook\n"): WEBHOOK_URL,
    }
    output = assert_ok(
        docker_run(
            docker_cli,
            ALERTMANAGER_IMAGE,
            "/bin/amtool",
            ["check-config", "/etc/alertmanager/alertmanager.yml"],
            mounts,
        )
    )
    assert "SUCCESS" in output
    assert "1 receivers" in output


# --- web config and the bcrypt hash ---------------------------------------------------------------


def test_the_hash_is_the_same_for_the_same_password_and_checks_out() -> None:
    first = monitoring.bcrypt_hash("correct horse battery staple")
    assert first == monitoring.bcrypt_hash("correct horse battery staple")
    assert first != monitoring.bcrypt_hash("correct horse battery stapler")
    assert first.startswith("$2b$10$")
    assert bcrypt.checkpw(b"correct horse battery staple", first.encode())
    assert not bcrypt.checkpw(b"correct horse battery stapler", first.encode())
    # bcrypt writes back the salt it was given: the derived salt is in its canonical form.
    salt = monitoring.deterministic_salt("correct horse battery staple")
    assert first.encode().startswith(salt)
    assert len(salt) == len(bcrypt.gensalt(10))
    assert monitoring.bcrypt_hash("x", rounds=4).startswith("$2b$04$")
    with pytest.raises(ValueError, match="empty"):
        monitoring.bcrypt_hash("")
    with pytest.raises(ValueError, match="72 bytes"):
        monitoring.bcrypt_hash("p" * 73)


def test_web_config_holds_a_hash_never_a_password() -> None:
    hashed = monitoring.bcrypt_hash("s3cret")
    config = yaml.safe_load(monitoring.web_config({"admin": hashed}))
    assert config == {"basic_auth_users": {"admin": hashed}}
    with pytest.raises(ValueError, match="bcrypt hash"):
        monitoring.web_config({"admin": "s3cret"})
    with pytest.raises(ValueError, match="user name"):
        monitoring.web_config({"ad:min": hashed})


def test_promtool_accepts_the_web_config(docker_cli: str, tmp_path: Path) -> None:
    web = monitoring.web_config({"admin": monitoring.bcrypt_hash("s3cret")})
    mounts = {write(tmp_path, "web.yml", web): WEB_YML}
    output = assert_ok(
        docker_run(
            docker_cli, PROMETHEUS_IMAGE, "/bin/promtool", ["check", "web-config", WEB_YML], mounts
        )
    )
    assert "SUCCESS" in output


# --- docs -----------------------------------------------------------------------------------------


def test_the_alerts_table_lists_every_alert() -> None:
    text = OBSERVABILITY_DOC.read_text()
    assert "\n## Alerts\n" in text
    section = text.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert documented == ALERTS


def test_every_threshold_has_its_documented_config_key_and_default() -> None:
    fields = {field.name: field.default for field in dataclasses.fields(MonitoringSettings)}
    # The intervals follow `scrapeIntervalSeconds`; Alertmanager's timings are fixed.
    fixed = {"scrape_interval", "evaluation_interval", "group_wait", "group_interval"}
    assert set(monitoring.CONFIG_KEYS) == set(fields) - fixed - {"repeat_interval"}
    stack_defaults = {
        (field.alias or name): field.default for name, field in StackConfig.model_fields.items()
    }
    for name, key in monitoring.CONFIG_KEYS.items():
        assert stack_defaults[key] == fields[name], key
    text = OBSERVABILITY_DOC.read_text().split("\n## Alerts\n", 1)[1]
    for name, key in monitoring.CONFIG_KEYS.items():
        default = as_documented(fields[name])
        assert re.search(rf"`{key}` \(`?{re.escape(default)}", text) or re.search(
            rf"\| `{key}` \| `{re.escape(default)}` \|", text
        ), f"{key} (default {default}) is not in docs/observability.md"


def as_documented(value: object) -> str:
    return value if isinstance(value, str) else format(value, "g")


def test_the_scrape_jobs_use_the_ports_the_roles_serve_on() -> None:
    ports = {job.job: job.port for job in monitoring.SCRAPE_JOBS}
    assert ports["api"] == API_PORT
    assert ports["worker"] == WORKER_METRICS_PORT == Settings.model_fields["metrics_port"].default
    assert ports["proxy"] == proxy.METRICS_PORT
