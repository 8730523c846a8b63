"""uv installed under a Python marked externally-managed (PEP 668), as Debian's and Ubuntu's are:
the bootstrap really runs with that Python and really installs uv from the package index, into the
project's .tools/ only: nothing under the user's home, no `pip install --user`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest

from scripts import bootstrap
from tests.bootstrap.conftest import run_bootstrap

SYSTEM_PYTHON = "/usr/bin/python3"
NO_UV_PATH = "/usr/bin:/bin"


def externally_managed(python: str) -> bool:
    if not os.access(python, os.X_OK):
        return False
    stdlib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('stdlib'))"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return bool(stdlib) and (Path(stdlib) / "EXTERNALLY-MANAGED").exists()


pytestmark = pytest.mark.skipif(
    not externally_managed(SYSTEM_PYTHON) or shutil.which("uv", path=NO_UV_PATH) is not None,
    reason=f"needs {SYSTEM_PYTHON} marked externally-managed and no uv in {NO_UV_PATH}",
)


def test_uv_lands_in_the_project_tools_directory(tmp_path: Path) -> None:
    home, user_base, tools = tmp_path / "home", tmp_path / "user-base", tmp_path / ".tools"
    home.mkdir()
    env = {
        "PATH": NO_UV_PATH,
        "HOME": str(home),
        "PYTHONUSERBASE": str(user_base),
        "TASKSTACK_TOOLS_DIR": str(tools),
    }
    # What the old fallback did is refused by this Python: the proof that it is not what runs.
    if subprocess.run([SYSTEM_PYTHON, "-m", "pip", "--version"], check=False).returncode == 0:
        refused = subprocess.run(
            [SYSTEM_PYTHON, "-m", "pip", "install", "--user", "--dry-run", "--no-deps", "uv"],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
            check=False,
        )
        assert refused.returncode != 0
        assert "externally-managed-environment" in refused.stderr

    done = run_bootstrap("uv", env=env, python=SYSTEM_PYTHON)
    assert done.returncode == 0, done.stderr
    uv = tools / "uv" / "bin" / "uv"
    assert done.stdout.strip() == str(uv)
    assert bootstrap.tool_version(uv) == bootstrap.UV_VERSION
    assert f"installing uv {bootstrap.UV_VERSION}" in done.stderr
    # Only the binary was kept, no temporary directory, nothing in the user's site or home.
    assert sorted(p.name for p in tools.iterdir()) == ["uv"]
    assert not user_base.exists()
    assert list(home.iterdir()) in ([], [home / ".cache"])
    assert not Path(sysconfig.get_path("purelib", vars={"base": str(user_base)})).exists()

    again = run_bootstrap("uv", env=env, python=SYSTEM_PYTHON)
    assert again.returncode == 0
    assert again.stdout.strip() == str(uv)
    assert "installing" not in again.stderr  # present at the pinned version: nothing to do
