"""The reference pages keep up with the code: a new check id, setting, command, model or
exception that the docs do not mention fails here, before anyone reads the docs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from django_autoembed import exceptions, models
from django_autoembed.settings import KEYS

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "django_autoembed"
REFERENCE = ROOT / "docs" / "reference"
CHECK_ID = re.compile(r"autoembed\.[A-Z]\d{3}")


def _page(name: str) -> str:
    return (REFERENCE / name).read_text(encoding="utf-8")


def _api_pages() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(REFERENCE.glob("api*.md")))


def test_every_check_id_in_the_code_is_documented_and_no_other():
    in_code = {
        match
        for path in PACKAGE.rglob("*.py")
        for match in re.findall(r'id="(autoembed\.[A-Z]\d{3})"', path.read_text(encoding="utf-8"))
    }
    documented = set(CHECK_ID.findall(_page("checks.md")))
    assert in_code, "no check ids found in the package: has the pattern changed?"
    assert sorted(in_code - documented) == [], "check ids missing from docs/reference/checks.md"
    assert sorted(documented - in_code) == [], "checks.md documents ids the code does not have"


def test_every_setting_is_in_a_table_of_the_settings_page():
    listed = re.findall(r"^:keys:(.*)$", _page("settings.md"), re.M)
    tabled = [key for line in listed for key in line.replace(",", " ").split()]
    assert sorted(set(KEYS) - set(tabled)) == [], "keys in no {autoembed-settings} table"
    assert len(tabled) == len(set(tabled)), "a key is in two tables"


def test_every_command_of_the_app_is_documented():
    commands = {
        p.stem for p in (PACKAGE / "management" / "commands").glob("*.py") if p.stem != "__init__"
    }
    page = _page("commands.md")
    generated = set(re.findall(r"^```\{autoembed-command\} (\w+)$", page, re.M))
    overrides = {"makemigrations", "migrate"}  # Django's own options: described in prose
    assert sorted(commands - overrides - generated) == []
    assert sorted(generated - commands) == []
    assert all(f"`{name}`" in page for name in overrides)


def test_every_public_model_and_exception_is_in_the_api_reference():
    pages = _api_pages()
    names = list(models.__all__) + [
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value) and issubclass(value, exceptions.AutoembedError)
    ]
    missing = [name for name in names if not re.search(rf"\b{name}\b", pages)]
    assert missing == []


def test_every_field_of_the_status_api_is_described():
    from dataclasses import fields

    from django_autoembed.status import ConfigStatus, PushStatus, Status

    pages = _api_pages()
    missing = [
        f"{cls.__name__}.{f.name}"
        for cls in (Status, ConfigStatus, PushStatus)
        for f in fields(cls)
        if f"`{f.name}`" not in pages
    ]
    assert missing == []
