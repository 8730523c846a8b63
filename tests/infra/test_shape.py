"""The program stays readable at a glance: no module over 400 lines, no function over 60."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.infra.pulumi_mocks import REPO_ROOT

MODULES = sorted((REPO_ROOT / "infra").rglob("*.py"))
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def name(path: Path) -> str:
    return str(path.relative_to(REPO_ROOT))


def test_the_program_is_found() -> None:
    assert {"infra/__main__.py", "infra/targets/core.py"} <= {name(p) for p in MODULES}


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_no_module_is_over_400_lines(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_MODULE_LINES


@pytest.mark.parametrize("path", MODULES, ids=name)
def test_no_function_is_over_60_lines(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = {
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    }
    assert not long
