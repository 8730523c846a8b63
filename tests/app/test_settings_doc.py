"""docs/app.md's settings table is the one list of the settings: it matches `Settings` field for
field, default for default."""

import re
from pathlib import Path

from app.config import Settings
from tests.app.environment import REPO_ROOT

APP_DOC = REPO_ROOT / "docs" / "app.md"
# A table row: | `NAME` | `default` or words | meaning |
_ROW = re.compile(r"^\| `(?P<name>[A-Z0-9_]+)` \| (?P<default>[^|]+?) \|")


def documented_settings() -> dict[str, str]:
    """NAME -> the default column (backticks removed), from the rows under `## Settings`."""
    section = APP_DOC.read_text().split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = (_ROW.match(line) for line in section.splitlines())
    return {row["name"]: row["default"].strip("`") for row in rows if row}


def documented_default(value: object) -> str:
    """How the table writes a field's default."""
    if value is None:
        return "unset"
    if value == "":  # the broker and the result backend: "same as REDIS_URL"
        return "REDIS_URL"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path):
        return str(value)
    return str(value)


def test_every_setting_is_documented_once_and_nothing_else() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    documented = documented_settings()
    assert sorted(fields - documented.keys()) == [], f"missing from {APP_DOC}"
    assert sorted(documented.keys() - fields) == [], f"in {APP_DOC} but not in Settings"


def test_documented_defaults_are_the_fields_defaults() -> None:
    documented = documented_settings()
    wrong = {
        name.upper(): (documented[name.upper()], documented_default(field.default))
        for name, field in Settings.model_fields.items()
        if name.upper() in documented
        and documented[name.upper()] != documented_default(field.default)
    }
    assert wrong == {}, f"(documented, actual) defaults differ in {APP_DOC}"
