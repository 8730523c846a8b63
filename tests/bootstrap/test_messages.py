"""What `make up` says when something is missing: one message naming it and the manual way, a
non-zero exit, and nothing installed."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from scripts import bootstrap
from tests.bootstrap.conftest import ROOT, run_bootstrap


def pins(tmp_path: Path) -> Path:
    """A pin for this platform, so that the download is attempted."""
    path = tmp_path / "pulumi-checksums.txt"
    name = f"pulumi-v3.999.0-{bootstrap.platform_suffix()}.tar.gz"
    path.write_text(f"version 3.999.0\n{hashlib.sha256(b'x').hexdigest()}  {name}\n")
    return path


def one_message(stderr: str, what: str) -> None:
    assert stderr.count("make up: ") == 1, stderr
    assert what in stderr, stderr
    assert "Traceback" not in stderr, stderr


def test_no_engine(tmp_path: Path, fake_uv: Path) -> None:
    tools = tmp_path / ".tools"
    done = run_bootstrap(
        "up",
        env={
            "DOCKER_HOST": f"unix://{tmp_path / 'dead.sock'}",
            "TASKSTACK_TOOLS_DIR": str(tools),
            "PATH": f"{fake_uv}:/usr/bin:/bin",
        },
    )
    assert done.returncode == 1
    one_message(done.stderr, f"no Docker engine answers at unix://{tmp_path / 'dead.sock'}")
    assert "DOCKER_HOST" in done.stderr
    assert "Nothing was installed" in done.stderr
    assert not tools.exists()


def test_no_internet(tmp_path: Path, engine: str, fake_uv: Path, closed_port: int) -> None:
    tools = tmp_path / ".tools"
    secrets_before = (ROOT / ".secrets").exists()
    done = run_bootstrap(
        "up",
        env={
            "DOCKER_HOST": engine,
            "TASKSTACK_TOOLS_DIR": str(tools),
            "TASKSTACK_PULUMI_CHECKSUMS": str(pins(tmp_path)),
            "TASKSTACK_PULUMI_BASE_URL": f"http://127.0.0.1:{closed_port}/releases/sdk",
            "PATH": f"{fake_uv}:/usr/bin:/bin",
        },
    )
    assert done.returncode == 1
    one_message(done.stderr, "the Pulumi CLI 3.999.0 could not be downloaded")
    assert "needs internet" in done.stderr
    assert "tar -xzf" in done.stderr  # the manual way
    assert "Nothing was installed" in done.stderr
    assert not tools.exists()
    assert (ROOT / ".secrets").exists() == secrets_before


@pytest.mark.skipif(not os.access("/usr/bin/python3", os.X_OK), reason="no /usr/bin/python3")
def test_no_internet_for_uv(tmp_path: Path, engine: str, closed_port: int) -> None:
    """uv missing and PyPI unreachable: the same kind of message, and no .tools/ left."""
    tools = tmp_path / ".tools"
    done = run_bootstrap(
        "up",
        env={
            "DOCKER_HOST": engine,
            "TASKSTACK_TOOLS_DIR": str(tools),
            "PATH": "/usr/bin:/bin",  # no uv here
            "PIP_CONFIG_FILE": "/dev/null",
            "PIP_INDEX_URL": f"http://127.0.0.1:{closed_port}/simple",
            "PIP_FIND_LINKS": "",
            "PIP_RETRIES": "0",
            "PIP_TIMEOUT": "5",
        },
        python="/usr/bin/python3",
    )
    assert done.returncode == 1
    one_message(done.stderr, f"uv {bootstrap.UV_VERSION} could not be installed")
    assert "needs internet" in done.stderr
    assert not tools.exists()


def test_prod_without_its_secrets_refuses_before_installing(
    tmp_path: Path, engine: str, fake_uv: Path
) -> None:
    tools = tmp_path / ".tools"
    done = run_bootstrap(
        "up",
        "prod",
        env={
            "DOCKER_HOST": engine,
            "TASKSTACK_TOOLS_DIR": str(tools),
            "PATH": f"{fake_uv}:/usr/bin:/bin",
        },
    )
    assert done.returncode == 1
    one_message(done.stderr, "the prod stack needs a passphrase you keep")
    for command in (
        "export PULUMI_CONFIG_PASSPHRASE=",
        "pulumi stack select --create prod --secrets-provider passphrase",
        "pulumi config set --secret taskstack:postgresPassword",
        "pulumi config set --secret taskstack:redisPassword",
        "pulumi config set --secret taskstack:flowerBasicAuth",
        "make up STACK=prod",
    ):
        assert command in done.stderr
    assert not tools.exists()
