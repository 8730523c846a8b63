"""`down` deletes what uses others first (no engine needed)."""

from __future__ import annotations

from rehearsal.stack import deletion_order
from rehearsal.state import AppliedResource
from rehearsal.tokens import NETWORK, SECRET, SERVICE, VOLUME


def _resource(name: str, kind: str, sequence: int) -> AppliedResource:
    return AppliedResource(f"urn::{name}", kind, name, name, "", sequence)


def test_a_secret_newer_than_the_service_using_it_goes_after_that_service() -> None:
    # The service was updated in place to use a secret replaced after it was created.
    created = [
        _resource("network", NETWORK, 1),
        _resource("volume", VOLUME, 2),
        _resource("postgres", SERVICE, 3),
        _resource("api", SERVICE, 4),
        _resource("password", SECRET, 5),
    ]
    assert [r.physical_name for r in deletion_order(created)] == [
        "api",
        "postgres",
        "password",
        "volume",
        "network",
    ]
