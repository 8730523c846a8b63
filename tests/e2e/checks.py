"""What the end-to-end suites check the same way: a deploy under the probe (deploy/probe.py), the
Chromium that takes their screenshots."""

import shutil
from typing import Any


def assert_deploy_kept_its_promises(report: dict[str, Any]) -> None:
    """No failed request, every API copy and worker replaced, and every accepted job finished
    within the bound after the deploy ended; a late job's history is in the message."""
    assert report["image_changed"], report
    assert report["api_and_workers_all_new"], report
    assert report["gets"] > 100, report
    assert report["posts"] > 40, report
    assert report["failed_requests"] == 0, report
    assert report["late_jobs"] == {}, report["late_jobs"]
    assert report["jobs"] == {"succeeded": report["jobs_accepted"]}, report


def chromium() -> str:
    found = shutil.which("chromium")
    assert found, (
        "Debian's chromium is not installed (.ci/run installs it: apt-get install chromium)"
    )
    return found
