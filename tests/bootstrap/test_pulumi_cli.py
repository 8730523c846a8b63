"""The Pulumi CLI installer against a local HTTP server: a pinned digest installs, any other refuses
and leaves nothing behind, a second run downloads nothing."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest

from scripts import bootstrap
from tests.bootstrap.conftest import Served

VERSION = "3.999.0"


def archive(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fixture_cli(served: Served, files: dict[str, bytes] | None = None) -> str:
    """Serve a release archive for this platform; return its SHA-256."""
    payload = archive(
        files
        or {
            "pulumi/pulumi": f"#!/bin/sh\necho v{VERSION}\n".encode(),
            "pulumi/pulumi-language-python": b"#!/bin/sh\n",
        }
    )
    name = f"pulumi-v{VERSION}-{bootstrap.platform_suffix()}.tar.gz"
    (served.directory / "releases" / "sdk" / name).write_bytes(payload)
    return hashlib.sha256(payload).hexdigest()


@pytest.fixture
def tools(tmp_path: Path, served: Served, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TASKSTACK_TOOLS_DIR", str(tmp_path / ".tools"))
    monkeypatch.setenv("TASKSTACK_PULUMI_BASE_URL", served.url)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no pulumi of the machine's
    return tmp_path / ".tools"


def pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, digest: str | None) -> Path:
    pins = tmp_path / "pulumi-checksums.txt"
    name = f"pulumi-v{VERSION}-{bootstrap.platform_suffix()}.tar.gz"
    pins.write_text(f"# pins\nversion {VERSION}\n" + (f"{digest}  {name}\n" if digest else ""))
    monkeypatch.setenv("TASKSTACK_PULUMI_CHECKSUMS", str(pins))
    return pins


def test_the_pinned_digest_installs_and_a_second_run_downloads_nothing(
    tools: Path, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pin(tmp_path, monkeypatch, fixture_cli(served))
    installed = bootstrap.ensure_pulumi()
    assert installed == tools / f"pulumi-v{VERSION}" / "pulumi"
    assert bootstrap.tool_version(installed) == VERSION
    assert (installed.parent / "pulumi-language-python").exists()
    assert [p.name for p in tools.iterdir()] == [f"pulumi-v{VERSION}"]  # no temporary left
    downloads = len(served.requests)
    assert downloads == 1
    assert bootstrap.ensure_pulumi() == installed
    assert len(served.requests) == downloads


def test_another_digest_is_refused_and_nothing_is_left(
    tools: Path, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture_cli(served)
    pin(tmp_path, monkeypatch, "0" * 64)
    with pytest.raises(bootstrap.Missing, match="refused, nothing was installed"):
        bootstrap.ensure_pulumi()
    assert len(served.requests) == 1
    assert not tools.exists()


def test_a_wrong_digest_does_not_touch_an_existing_tools_directory(
    tools: Path, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tools / "uv").mkdir(parents=True)
    fixture_cli(served)
    pin(tmp_path, monkeypatch, "f" * 64)
    with pytest.raises(bootstrap.Missing, match="refused"):
        bootstrap.ensure_pulumi()
    assert [p.name for p in tools.iterdir()] == ["uv"]


def test_no_pinned_digest_means_no_download(
    tools: Path, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fixture_cli(served)
    pin(tmp_path, monkeypatch, None)
    with pytest.raises(bootstrap.Missing, match=r"refresh-checksums 3\.999\.0"):
        bootstrap.ensure_pulumi()
    assert served.requests == []
    assert not tools.exists()


def test_an_archive_reaching_outside_its_directory_is_refused(
    tools: Path, served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = fixture_cli(served, {"pulumi/pulumi": b"#!/bin/sh\n", "../escape": b"x"})
    pin(tmp_path, monkeypatch, digest)
    with pytest.raises(bootstrap.Missing, match="unexpected path"):
        bootstrap.ensure_pulumi()
    assert not tools.exists()
    assert not (tmp_path / "escape").exists()


def test_refresh_checksums_pins_the_four_archives_of_the_official_file(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKSTACK_PULUMI_BASE_URL", served.url)
    pins = pin(tmp_path, monkeypatch, None)
    suffixes = ["linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64", "windows-x64"]
    official = "".join(
        f"{hashlib.sha256(s.encode()).hexdigest()}  pulumi-v4.0.0-{s}.tar.gz\n" for s in suffixes
    )
    (served.directory / "releases" / "sdk" / "pulumi-4.0.0-checksums.txt").write_text(official)
    bootstrap.refresh_checksums("4.0.0")
    version, digests = bootstrap.read_pins(pins)
    assert version == "4.0.0"
    assert digests == {
        f"pulumi-v4.0.0-{s}.tar.gz": hashlib.sha256(s.encode()).hexdigest() for s in suffixes[:4]
    }


def test_refresh_checksums_changes_nothing_when_an_archive_is_missing(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKSTACK_PULUMI_BASE_URL", served.url)
    pins = pin(tmp_path, monkeypatch, None)
    before = pins.read_text()
    official = f"{'a' * 64}  pulumi-v4.0.0-linux-x64.tar.gz\n"
    (served.directory / "releases" / "sdk" / "pulumi-4.0.0-checksums.txt").write_text(official)
    with pytest.raises(bootstrap.Missing, match="no SHA-256 for"):
        bootstrap.refresh_checksums("4.0.0")
    assert pins.read_text() == before


def test_the_pins_follow_uv_lock() -> None:
    """The CLI is of the SDK's major version in uv.lock, a digest pinned for each of the four
    platforms; the plugin is pulumi-docker's."""
    version, digests = bootstrap.read_pins(bootstrap.CHECKSUMS)
    assert version.split(".")[0] == bootstrap.locked_version("pulumi").split(".")[0]
    platforms = ("linux-x64", "linux-arm64", "darwin-x64", "darwin-arm64")
    assert set(digests) == {f"pulumi-v{version}-{p}.tar.gz" for p in platforms}
    assert all(len(digest) == 64 for digest in digests.values())
    assert bootstrap.locked_version("pulumi-docker").split(".")[0] == "5"
