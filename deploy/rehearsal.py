"""The rehearsal as a deployer: `python -m rehearsal up|down --stack STACK --name NAME`, as
`make rehearse` runs it, on the engine DOCKER_HOST names (docs/rehearsal.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from deploy.base import ARTIFACTS, REPO_ROOT, Deployed, Deployer, DeployError

TIMEOUT_SECONDS = 1200


def reported_changes(stdout: str) -> list[str]:
    """The steps an `up` reports (`changes: N`, then one line per create, update, replace or
    delete, from the diff against the read-back state: docs/rehearsal.md)."""
    lines = stdout.splitlines()
    found = [i for i, line in enumerate(lines) if line.strip().startswith("changes: ")]
    if len(found) != 1:
        raise DeployError(f"no `changes: N` line in what the rehearsal printed:\n{stdout}")
    (index,) = found
    count = int(lines[index].split(":")[1])
    steps = [line.strip() for line in lines[index + 1 : index + 1 + count]]
    if len(steps) != count:
        raise DeployError(f"{count} changes announced, {len(steps)} listed:\n{stdout}")
    return steps


class RehearsalDeployer(Deployer):
    @property
    def outputs_file(self) -> Path:
        return ARTIFACTS / f"{self.name}-outputs.json"

    def up(
        self,
        config: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
        *,
        check: bool = True,
    ) -> Deployed:
        given = [
            *(
                arg
                for key, value in (config or {}).items()
                for arg in ("--config", f"{key}={value}")
            ),
            *(
                arg
                for key, value in (secrets or {}).items()
                for arg in ("--secret", f"{key}={value}")
            ),
        ]
        code, stdout, stderr = self._rehearse(
            "up", "--outputs-json", str(self.outputs_file), *given, check=check
        )
        if code != 0:
            return Deployed(ok=False, log=stdout + stderr)
        return Deployed(ok=True, changes=reported_changes(stdout), log=stdout + stderr)

    def down(self, *, volumes: bool = False, check: bool = True) -> None:
        self._rehearse("down", *(["--volumes"] if volumes else []), check=check)

    def outputs(self) -> dict[str, Any]:
        """What the last successful `up` wrote to artifacts/NAME-outputs.json."""
        if not self.outputs_file.exists():
            return {}
        return dict(json.loads(self.outputs_file.read_text()))

    def _rehearse(self, command: str, *args: str, check: bool) -> tuple[int, str, str]:
        """`python -m rehearsal COMMAND --stack STACK --name NAME ARGS`: exit code, outputs."""
        argv = [
            sys.executable,
            "-m",
            "rehearsal",
            command,
            "--stack",
            self.stack,
            "--name",
            self.name,
        ]
        argv.extend(args)
        if self.echo:
            code, stdout, stderr = _echoed(argv)
        else:
            completed = subprocess.run(
                argv,
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=TIMEOUT_SECONDS,
                check=False,
            )
            code, stdout, stderr = completed.returncode, completed.stdout, completed.stderr
        if check and code != 0:
            raise DeployError(
                f"rehearsal {command} {self.name} failed ({code}):\n"
                f"{stdout[-4000:]}\n{stderr[-8000:]}"
            )
        return code, stdout, stderr


def _echoed(argv: list[str]) -> tuple[int, str, str]:
    """Run with stdout copied to stderr line by line as it comes (and kept), stderr shown as is."""
    lines = []
    with subprocess.Popen(argv, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stderr.write(line)
            lines.append(line)
        code = process.wait()
    return code, "".join(lines), ""
