#!/usr/bin/env python3
"""`make up` / `make down` / `make uv`: the tools a deploy needs, installed inside the project.

Standard library only (it runs with the system `python3`, before any environment exists):

    python3 scripts/bootstrap.py uv                  # uv on PATH, else .tools/uv/bin/uv (pinned)
    python3 scripts/bootstrap.py up [STACK]          # tools, runtime dependencies, then `pulumi up`
    python3 scripts/bootstrap.py down [STACK]        # the same set-up, then `pulumi destroy`
    python3 scripts/bootstrap.py env [STACK]         # `eval "$(...)"`: pulumi on PATH, the backend
    python3 scripts/bootstrap.py refresh-checksums [VERSION]   # re-pin scripts/pulumi-checksums.txt

Everything goes under .tools/ (git-ignored): never `pip install --user`, never into the system
Python (Debian/Ubuntu refuse it, PEP 668). A download lands in a temporary file, is checked against
the digest pinned in scripts/pulumi-checksums.txt, unpacked into a temporary directory and renamed
into place: an interrupted or refused install leaves nothing behind. When something is missing
(internet on first use, a Docker engine, a passphrase for prod) one message says what and how to
provide it, and the exit status is 1. docs/infra.md "From clone to a running stack".

Environment overrides (the tests use them): TASKSTACK_TOOLS_DIR, TASKSTACK_PULUMI_BASE_URL,
TASKSTACK_PULUMI_CHECKSUMS.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
UV_VERSION = "0.13.9"
PULUMI_BASE_URL = "https://get.pulumi.com/releases/sdk"
CHECKSUMS = ROOT / "scripts" / "pulumi-checksums.txt"
PROD_SECRETS = ("postgresPassword", "redisPassword", "flowerBasicAuth")
DOWNLOAD_TIMEOUT = 60


class Missing(Exception):
    """Something the set-up needs and cannot provide itself: the one message to print."""


def tools_dir() -> Path:
    return Path(os.environ.get("TASKSTACK_TOOLS_DIR") or ROOT / ".tools")


def say(text: str) -> None:
    print(f"bootstrap: {text}", file=sys.stderr, flush=True)


def fail(text: str) -> NoReturn:
    raise Missing(text)


@contextlib.contextmanager
def tools_dir_cleanup() -> Iterator[Path]:
    """Yield .tools/; on failure, remove it again if this run created it and it is empty."""
    tools = tools_dir()
    existed = tools.exists()
    tools.mkdir(parents=True, exist_ok=True)
    try:
        yield tools
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):
                tools.rmdir()
        raise


# --- uv ---------------------------------------------------------------------------------------


def tool_version(executable: str | Path) -> str | None:
    """The x.y.z that `<tool> --version` / `<tool> version` prints, or None if it does not run."""
    for flag in ("--version", "version"):
        try:
            out = subprocess.run(
                [str(executable), flag], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        match = re.search(r"(\d+\.\d+\.\d+)", out.stdout)
        if out.returncode == 0 and match:
            return match.group(1)
    return None


def local_uv() -> Path:
    return tools_dir() / "uv" / "bin" / "uv"


def ensure_uv(python: str = sys.executable) -> Path:
    """uv from PATH if there is one, else the pinned copy under .tools/uv (installed if missing).

    The copy is installed with pip inside a throwaway virtual environment made by `python -m venv`
    (which an externally-managed Python allows), and only the uv binary is kept.
    """
    on_path = shutil.which("uv")
    if on_path and tool_version(on_path):
        return Path(on_path)
    target = local_uv()
    if tool_version(target) == UV_VERSION:
        return target
    with tools_dir_cleanup() as tools:
        install_uv(python, tools, target)
    return target


def install_uv(python: str, tools: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=tools, prefix=".tmp-uv-") as tmp:
        venv = Path(tmp) / "venv"
        made = subprocess.run(
            [python, "-m", "venv", str(venv)], capture_output=True, text=True, check=False
        )
        if made.returncode != 0:
            fail(
                f"uv is missing, and `{python} -m venv` cannot create the environment to install "
                f"it in ({last_line(made.stderr)}).\n"
                "Provide it one of these ways, then run the command again:\n"
                "    sudo apt-get install python3-venv     # Debian/Ubuntu: venv with pip\n"
                "    or install uv yourself: https://docs.astral.sh/uv/getting-started/installation/"
            )
        vpython = venv / ("Scripts" if os.name == "nt" else "bin") / "python"
        say(f"installing uv {UV_VERSION} into {target.parent.parent} (pip, in a private venv)")
        pip = subprocess.run(
            [str(vpython), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
             "--no-input", f"uv=={UV_VERSION}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        built = venv / "bin" / "uv"
        if pip.returncode != 0 or tool_version(built) != UV_VERSION:
            fail(
                f"uv {UV_VERSION} could not be installed from the Python package index "
                f"({last_line(pip.stderr) or 'no uv binary'}).\n"
                "The first `make` needs internet (PyPI). Without it, install uv yourself "
                "(https://docs.astral.sh/uv/getting-started/installation/) so that `uv` is on "
                "PATH, then run the command again. Nothing was installed."
            )
        staged = Path(tmp) / "uv"
        (staged / "bin").mkdir(parents=True)
        for name in ("uv", "uvx"):
            if (venv / "bin" / name).exists():
                shutil.copy2(venv / "bin" / name, staged / "bin" / name)
        replace_dir(staged, target.parent.parent)


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def replace_dir(staged: Path, final: Path) -> None:
    """Move a fully prepared directory into place (a rename on the same filesystem)."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{secrets.token_hex(4)}")
        final.rename(old)
        staged.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staged.rename(final)


# --- the Pulumi CLI ---------------------------------------------------------------------------


def checksums_file() -> Path:
    return Path(os.environ.get("TASKSTACK_PULUMI_CHECKSUMS") or CHECKSUMS)


def read_pins(path: Path | None = None) -> tuple[str, dict[str, str]]:
    """(version, {archive name: sha256}) from scripts/pulumi-checksums.txt."""
    version, digests = "", {}
    for raw in (path or checksums_file()).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("version "):
            version = line.split()[1]
        elif line:
            digest, name = line.split()
            digests[name.lstrip("*")] = digest.lower()
    if not version:
        raise ValueError(f"{path or checksums_file()}: no `version` line")
    return version, digests


def platform_suffix() -> str:
    """Pulumi's words for this machine: linux|darwin - x64|arm64."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(machine)
    if system not in ("linux", "darwin") or arch is None:
        fail(
            f"there is no Pulumi CLI release for {platform.system()} {platform.machine()} that "
            "this set-up knows (linux and darwin, x86_64 and arm64). Install it yourself "
            "(https://www.pulumi.com/docs/install/) and put it on PATH."
        )
    return f"{system}-{arch}"


def archive_name(version: str) -> str:
    return f"pulumi-v{version}-{platform_suffix()}.tar.gz"


def local_pulumi(version: str) -> Path:
    return tools_dir() / f"pulumi-v{version}" / "pulumi"


def ensure_pulumi() -> Path:
    """The pinned Pulumi CLI: on PATH at that version, else .tools/pulumi-v<version>/."""
    version, digests = read_pins()
    on_path = shutil.which("pulumi")
    if on_path and tool_version(on_path) == version:
        return Path(on_path)
    target = local_pulumi(version)
    if tool_version(target) == version:
        return target
    name = archive_name(version)
    manual = (
        f"Without it, download {name} yourself (https://www.pulumi.com/docs/install/versions/), "
        f"check its SHA-256, and unpack it so that {target} exists:\n"
        f"    mkdir -p {target.parent} && tar -xzf {name} -C {target.parent} --strip-components=1\n"
        f"or put a pulumi {version} on PATH."
    )
    digest = digests.get(name)
    if not digest:
        fail(
            f"no SHA-256 is pinned for {name} in {checksums_file()}, so the Pulumi CLI is not "
            "downloaded.\nRefresh the pins on a machine with internet and commit them:\n"
            f"    python3 scripts/bootstrap.py refresh-checksums {version}\n" + manual
        )
    base = os.environ.get("TASKSTACK_PULUMI_BASE_URL") or PULUMI_BASE_URL
    url = f"{base.rstrip('/')}/{name}"
    install_archive(url, digest, target.parent, version, manual)
    return target


def install_archive(url: str, digest: str, final: Path, version: str, manual: str) -> None:
    """Download url to a temporary file, check its SHA-256, unpack, then rename into `final`."""
    with tools_dir_cleanup() as tools:
        download_and_unpack(url, digest, final, version, manual, tools)
    say(f"the Pulumi CLI {version} is in {final}")


def download_and_unpack(
    url: str, digest: str, final: Path, version: str, manual: str, tools: Path
) -> None:
    with tempfile.TemporaryDirectory(dir=tools, prefix=".tmp-pulumi-") as tmp:
        say(f"downloading the Pulumi CLI {version}: {url}")
        archive = Path(tmp) / "pulumi.tar.gz"
        sha = hashlib.sha256()
        try:
            response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT)  # noqa: S310
            with response, archive.open("wb") as out:
                while chunk := response.read(1 << 20):
                    sha.update(chunk)
                    out.write(chunk)
        except (urllib.error.URLError, OSError, TimeoutError) as error:
            reason = getattr(error, "reason", error)
            fail(
                f"the Pulumi CLI {version} could not be downloaded from {url} ({reason}).\n"
                "The first `make up` needs internet. " + manual + "\nNothing was installed."
            )
        if sha.hexdigest() != digest:
            fail(
                f"{url} has SHA-256 {sha.hexdigest()}, not the {digest} pinned in "
                f"{checksums_file()}: refused, nothing was installed. If the pin is stale, "
                f"refresh it (python3 scripts/bootstrap.py refresh-checksums {version}), review it."
            )
        unpacked = Path(tmp) / "unpacked"
        unpacked.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                member_path = Path(member.name)
                if member_path.is_absolute() or ".." in member_path.parts or member.islnk():
                    fail(f"{url}: unexpected path {member.name!r} in the archive; refused.")
            tar.extractall(unpacked)  # noqa: S202 (checked above)
        binary = unpacked / "pulumi" / "pulumi"
        if not binary.is_file():
            fail(f"{url}: no pulumi/pulumi in the archive; refused, nothing was installed.")
        replace_dir(unpacked / "pulumi", final)


def refresh_checksums(version: str | None) -> None:
    """Download Pulumi's official checksums file and pin the four archives make up can use."""
    version = version or read_pins()[0]
    base = os.environ.get("TASKSTACK_PULUMI_BASE_URL") or PULUMI_BASE_URL
    url = f"{base.rstrip('/')}/pulumi-{version}-checksums.txt"
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response:  # noqa: S310
            official = response.read().decode()
    except (urllib.error.URLError, OSError) as error:
        fail(f"{url} could not be downloaded ({getattr(error, 'reason', error)}).")
    wanted = [
        f"pulumi-v{version}-{suffix}.tar.gz"
        for suffix in ("linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64")
    ]
    found = {}
    for line in official.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") in wanted:
            found[parts[1].lstrip("*")] = parts[0].lower()
    valid = re.compile(r"[0-9a-f]{64}")
    if missing := [name for name in wanted if not valid.fullmatch(found.get(name, ""))]:
        fail(f"{url} has no SHA-256 for {', '.join(missing)}; the pins were not changed.")
    path = checksums_file()
    header = [line for line in path.read_text().splitlines() if line.startswith("#")][:6]
    body = [f"version {version}", f"# from {url}"] + [f"{found[name]}  {name}" for name in wanted]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(header + body) + "\n")
    tmp.replace(path)
    say(f"{path} now pins the Pulumi CLI {version}; review and commit it")


# --- the pulumi-docker provider, the backend, the passphrase ----------------------------------


def locked_version(package: str) -> str:
    """The version uv.lock pins for a package (no tomllib: Python 3.8+ runs this)."""
    text = (ROOT / "uv.lock").read_text()
    match = re.search(rf'\nname = "{re.escape(package)}"\nversion = "([^"]+)"', text)
    if not match:
        raise ValueError(f"uv.lock pins no {package}")
    return match.group(1)


def ensure_docker_plugin(pulumi: Path, env: dict[str, str]) -> None:
    version = locked_version("pulumi-docker")
    listed = subprocess.run(
        [str(pulumi), "plugin", "ls"], capture_output=True, text=True, env=env, check=False
    )
    if re.search(rf"^docker\s+resource\s+{re.escape(version)}\s", listed.stdout, re.M):
        return
    say(f"installing the pulumi-docker provider plugin {version} (uv.lock's pulumi-docker)")
    done = subprocess.run(
        [str(pulumi), "plugin", "install", "resource", "docker", version],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        fail(
            f"the pulumi-docker provider plugin {version} could not be installed "
            f"({last_line(done.stderr) or last_line(done.stdout)}).\n"
            "The first `make up` needs internet. Without it, bring the plugin's archive from a "
            f"machine that has one: `pulumi plugin install resource docker {version} --file <it>`."
        )


def choose_backend(pulumi: Path, env: dict[str, str]) -> None:
    """The user's backend (PULUMI_BACKEND_URL, a `pulumi login` that works), else .pulumi-state/."""
    if env.get("PULUMI_BACKEND_URL"):
        return
    whoami = subprocess.run(
        [str(pulumi), "whoami"], capture_output=True, text=True, env=env, check=False
    )
    if whoami.returncode == 0:
        return
    state = ROOT / ".pulumi-state"
    state.mkdir(exist_ok=True)
    env["PULUMI_BACKEND_URL"] = f"file://{state}"
    say(f"using the local state backend file://{state} (set PULUMI_BACKEND_URL to choose another)")


def passphrase_file(stack: str) -> Path:
    return ROOT / ".secrets" / f"pulumi-{stack}.passphrase"


def has_passphrase(env: dict[str, str]) -> bool:
    return bool(env.get("PULUMI_CONFIG_PASSPHRASE") or env.get("PULUMI_CONFIG_PASSPHRASE_FILE"))


def stack_file(stack: str) -> Path:
    return ROOT / f"Pulumi.{stack}.yaml"


def prod_commands(stack: str, with_passphrase: bool) -> str:
    lines = []
    if with_passphrase:
        lines.append("export PULUMI_CONFIG_PASSPHRASE='<a passphrase you keep safe>'")
    lines += [
        f'eval "$(python3 scripts/bootstrap.py env {stack})"   # pulumi on PATH, the state backend',
        f"pulumi stack select --create {stack} --secrets-provider passphrase",
        'pulumi config set --secret taskstack:postgresPassword "$(openssl rand -base64 32)"',
        'pulumi config set --secret taskstack:redisPassword "$(openssl rand -base64 32)"',
        'pulumi config set --secret taskstack:flowerBasicAuth "admin:$(openssl rand -base64 24)"',
        f"make up STACK={stack}",
    ]
    return "\n".join(f"    {line}" for line in lines)


def is_prod(stack: str) -> bool:
    path = stack_file(stack)
    return stack == "prod" or (
        path.exists() and bool(re.search(r"taskstack:environment:\s*prod", path.read_text()))
    )


def prepare_passphrase(stack: str, env: dict[str, str], create: bool = True) -> None:
    """dev: reuse or create .secrets/pulumi-<stack>.passphrase; prod: the user's, or refuse."""
    if has_passphrase(env):
        return
    if not create and not passphrase_file(stack).exists():
        fail(
            f"the {stack} stack's passphrase is needed to tear it down: "
            "export PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE), then run make "
            "down again."
        )
    if is_prod(stack):
        fail(
            f"the {stack} stack needs a passphrase you keep (it encrypts the stack's secrets) and "
            "its three credentials. Set them, then run make up again:\n"
            + prod_commands(stack, True)
        )
    path = passphrase_file(stack)
    if not path.exists():
        config = stack_file(stack)
        if config.exists() and "encryptionsalt:" in config.read_text():
            fail(
                f"the {stack} stack was created with a passphrase this project does not have "
                f"({config} holds its salt). Export it, then run make up again:\n"
                "    export PULUMI_CONFIG_PASSPHRASE='<that passphrase>'"
            )
        path.parent.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(32) + "\n")
        say(
            f"created {path} (0600, git-ignored): the passphrase that encrypts the {stack} stack's "
            "secrets. Keep it; without it the stack's secrets cannot be read."
        )
    env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(path)


def prod_secrets_missing(stack: str) -> list[str]:
    path = stack_file(stack)
    text = path.read_text() if path.exists() else ""
    return [
        key for key in PROD_SECRETS if not re.search(rf"taskstack:{key}:\s*\n?\s*secure:", text)
    ]


# --- the Docker engine ------------------------------------------------------------------------


def docker_host() -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host
    if shutil.which("docker"):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                ["docker", "context", "inspect", "--format", "{{.Endpoints.docker.Host}}"],
                capture_output=True, text=True, timeout=20, check=False,
            )  # fmt: skip
            if out.returncode == 0 and out.stdout.strip():
                return out.stdout.strip()
    return "unix:///var/run/docker.sock"


def engine_answers(host: str) -> str | None:
    """None if the engine at host answers GET /_ping, else why not."""
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(10)
            sock.connect(host[len("unix://") :])
        elif host.startswith("tcp://"):
            hostport = host[len("tcp://") :].rstrip("/")
            name, _, port = hostport.rpartition(":")
            sock = socket.create_connection((name, int(port)), timeout=10)
            if os.environ.get("DOCKER_TLS_VERIFY"):
                sock.close()
                return None  # TLS: the connection is as far as a stdlib check goes
        else:
            return None  # ssh:// and others: left to the provider
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            reply = sock.recv(1024).decode("latin-1")
        if reply.startswith("HTTP/") and " 200 " in reply.split("\r\n", 1)[0]:
            return None
        return f"unexpected answer {last_line(reply.splitlines()[0] if reply else 'nothing')!r}"
    except (OSError, ValueError) as error:
        return str(error)


def check_engine() -> str:
    host = docker_host()
    why = engine_answers(host)
    if why:
        fail(
            f"no Docker engine answers at {host} ({why}).\n"
            "Start Docker (e.g. `sudo systemctl start docker`, or Docker Desktop), or point "
            "DOCKER_HOST at an engine, then run the command again. Nothing was installed."
        )
    return host


# --- up / down --------------------------------------------------------------------------------


def prepare(stack: str, action: str) -> tuple[Path, dict[str, str]]:
    """Everything `pulumi up|destroy` needs; checks that install nothing come first."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", stack):
        fail(f"{stack!r} is not a stack name")
    env = dict(os.environ)
    host = check_engine()
    if action == "up" and is_prod(stack) and not has_passphrase(env):
        prepare_passphrase(stack, env)  # refuses, with the commands
    uv = ensure_uv()
    pulumi = ensure_pulumi()
    # Pulumi runs the program with uv (Pulumi.yaml `toolchain: uv`): both on PATH.
    env["PATH"] = os.pathsep.join([str(pulumi.parent), str(uv.parent), env.get("PATH", "")])
    env.setdefault("DOCKER_HOST", host)
    env.setdefault("PULUMI_SKIP_UPDATE_CHECK", "true")
    # The runtime dependencies and the program's (group infra), none of the development tools;
    # --inexact keeps a developer's tools in .venv if `make test` installed them.
    say("installing the runtime dependencies (uv sync --frozen --no-default-groups --group infra)")
    sync = subprocess.run(
        [str(uv), "sync", "--frozen", "--no-default-groups", "--group", "infra", "--inexact"],
        cwd=ROOT, env=env, check=False,
    )  # fmt: skip
    if sync.returncode != 0:
        fail(
            "`uv sync` could not install the program's dependencies (above). The first `make up` "
            "needs internet (PyPI)."
        )
    ensure_docker_plugin(pulumi, env)
    choose_backend(pulumi, env)
    return pulumi, env


def up(stack: str) -> int:
    pulumi, env = prepare(stack, "up")
    prepare_passphrase(stack, env)
    if is_prod(stack) and (missing := prod_secrets_missing(stack)):
        fail(
            f"the {stack} stack has no {', '.join(missing)} secret yet; the program refuses to "
            "start without them. Set them, then run make up again:\n" + prod_commands(stack, False)
        )
    run = [str(pulumi)]
    for step in (
        ["stack", "select", "--create", stack, "--secrets-provider", "passphrase"],
        ["up", "--yes", "--stack", stack],
        ["stack", "output", "--stack", stack],
    ):
        done = subprocess.run(run + step, cwd=ROOT, env=env, check=False)
        if done.returncode != 0:
            return done.returncode
    return 0


def down(stack: str) -> int:
    pulumi, env = prepare(stack, "down")
    listed = subprocess.run(
        [str(pulumi), "stack", "ls", "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if listed.returncode == 0 and f'"name": "{stack}"' not in listed.stdout:
        backend = env.get("PULUMI_BACKEND_URL", "this backend")
        say(f"there is no {stack} stack in {backend}: nothing to do")
        return 0
    prepare_passphrase(stack, env, create=False)
    done = subprocess.run(
        [str(pulumi), "destroy", "--yes", "--stack", stack], cwd=ROOT, env=env, check=False
    )
    if done.returncode == 0 and is_prod(stack):
        say(
            "the prod data volumes were kept: "
            f"docker volume ls --filter label=com.taskstack.stack={stack}"
        )
    return done.returncode


def print_env(stack: str) -> int:
    version, _ = read_pins()
    pulumi_dir = local_pulumi(version).parent
    lines = [f'export PATH="{pulumi_dir}:{local_uv().parent}:$PATH"']
    if not os.environ.get("PULUMI_BACKEND_URL"):
        lines.append(f'export PULUMI_BACKEND_URL="file://{ROOT / ".pulumi-state"}"')
    if not has_passphrase(dict(os.environ)) and passphrase_file(stack).exists():
        lines.append(f'export PULUMI_CONFIG_PASSPHRASE_FILE="{passphrase_file(stack)}"')
    print("\n".join(lines))
    return 0


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    arg = argv[1] if len(argv) > 1 else None
    try:
        if command == "uv":
            print(ensure_uv())
            return 0
        if command == "pulumi":
            print(ensure_pulumi())
            return 0
        if command == "up":
            return up(arg or "dev")
        if command == "down":
            return down(arg or "dev")
        if command == "env":
            return print_env(arg or "dev")
        if command == "refresh-checksums":
            refresh_checksums(arg)
            return 0
    except Missing as missing:
        who = f"make {command}" if command in ("up", "down", "uv") else "bootstrap"
        print(f"\n{who}: {missing}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
