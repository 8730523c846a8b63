"""The rehearsed stacks, each brought up once per module and torn down (volumes too) at its end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.stack import ARTIFACTS, RehearsedStack


def _rehearsed(base: str) -> Iterator[RehearsedStack]:
    stack = RehearsedStack(base)
    ARTIFACTS.mkdir(exist_ok=True)
    # From nothing: a fresh volume proves first-start initialisation too.
    stack.down(volumes=True)
    try:
        stack.up()
        yield stack
    finally:
        stack.down(volumes=True)


@pytest.fixture(scope="module")
def dev_stack() -> Iterator[RehearsedStack]:
    yield from _rehearsed("dev")


@pytest.fixture(scope="module")
def prod_stack() -> Iterator[RehearsedStack]:
    yield from _rehearsed("prod")
