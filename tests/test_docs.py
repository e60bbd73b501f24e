"""Every code example in the docs runs here, page by page, so the docs cannot drift from the
code (Sybil reads the Markdown; the evaluators below say what "runs" means for each kind).

- ``python``: run in the page's namespace, in order, on the test database with the fake
  OpenAI server. A block whose first line is ``# settings.py`` runs over a copy of the test
  settings and its ``AUTOEMBED`` is validated as Django would read it; ``# models.py`` declares
  its models in an isolated app registry and they must pass Django's model checks.
- ``console``: each ``$ `` line is a command a reader types. ``manage.py`` commands must
  exist and their arguments must parse with the command's own parser; ``pip install`` may
  name only extras the package has; ``make`` only targets the Makefile has.
- ``text``, ``html``, ``sql``, ``toml`` and ``ini`` blocks are shown, not run (output, templates,
  what a migration writes); any other language fails, so a new kind of example gets an
  evaluator first.
"""

from __future__ import annotations

import re
import shlex
import tomllib
import warnings
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import get_commands, load_command_class
from django.db import models
from django.test.utils import isolate_apps
from sybil import Example, Sybil
from sybil.parsers.myst import CodeBlockParser

from django_autoembed import settings as autoembed_settings
from django_autoembed.checks import _config_errors
from django_autoembed.declarations import registry

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SHOWN = {"text", "html", "sql", "toml", "ini", "json", "diff"}
FENCE = re.compile(r"^(?P<fence>```+|~~~+)(?P<lang>[^\s`{]*)", re.M)


def run_python(example: Example) -> None:
    source: str = example.parsed
    namespace = example.namespace
    first = source.lstrip().splitlines()[0] if source.strip() else ""
    code = compile(source, f"{example.path}:{example.line}", "exec")
    if first.startswith("# settings.py"):
        with warnings.catch_warnings():
            # Reading a setting Django deprecates warns (EMAIL_* in 6.1); no example uses one.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", PendingDeprecationWarning)
            seeded = {
                k: _copy(getattr(django_settings, k)) for k in dir(django_settings) if k.isupper()
            }
        exec(code, seeded)
        if "AUTOEMBED" in seeded:
            autoembed_settings.parse(seeded["AUTOEMBED"])
        return
    if first.startswith("# models.py"):
        # Declared in an app of their own: the real apps' models and configs stay as they are.
        saved = list(registry._configs)
        try:
            with isolate_apps("example_project.documents"):
                scope = {"__name__": "example_project.documents.models"}
                exec(code, scope)
                declared = [
                    v
                    for v in scope.values()
                    if isinstance(v, type)
                    and issubclass(v, models.Model)
                    and v._meta.concrete_model
                ]
                concrete = [m for m in declared if not m._meta.abstract]
                errors = [e for m in concrete for e in m.check()]
                configs = [c for c in registry._configs if c.model_class in concrete]
                errors += [e for c in configs for e in _config_errors(c)]
                assert not errors, errors
        finally:
            registry._configs = saved
            registry.generation += 1  # caches of the registry's configs read them again
        return
    exec(code, namespace)


def _copy(value: Any) -> Any:
    return list(value) if isinstance(value, list | tuple) else value


def run_console(example: Example) -> None:
    for line in example.parsed.splitlines():
        if line.startswith("$ "):
            check_command(shlex.split(line[2:], comments=True))


def check_command(argv: list[str]) -> None:
    while argv and "=" in argv[0] and not argv[0].startswith("-"):  # VAR=value before it
        argv = argv[1:]
    if not argv:
        return
    program, *args = argv
    if program in PYTHONS and args[:1] == ["manage.py"]:
        check_manage(args[1:])
    elif program in PYTHONS and args[:2] == ["-m", "django"]:
        check_manage(args[2:])
    elif program in PYTHONS and args[:2] == ["-m", "pytest"]:
        check_pytest(args[2:])
    elif program == "pip" and args[:1] == ["install"]:
        check_pip(args[1:])
    elif program == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        for target in (a for a in args if "=" not in a):
            assert target in targets, f"make {target}: no such target in the Makefile"
    elif program not in {"cd", "git", "export", "curl", "gunicorn", "psql", "createdb"}:
        raise AssertionError(f"{program}: the docs test does not know how to check this command")


PYTHONS = {"python", "python3", ".venv/bin/python"}


def check_pytest(args: list[str]) -> None:
    """``-m`` names only markers the suite declares."""
    declared = {
        m.split(":")[0]
        for m in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"][
            "ini_options"
        ]["markers"]
    }
    for flag, value in pairwise(args):
        if flag == "-m":
            names = set(re.findall(r"[a-z_]+", value)) - {"not", "and", "or"}
            assert names <= declared, f"pytest -m {value}: no marker {sorted(names - declared)}"


def check_manage(args: list[str]) -> None:
    name, *rest = args
    commands = get_commands()
    assert name in commands, f"manage.py {name}: no such command"
    command = load_command_class(commands[name], name)
    parser = command.create_parser("manage.py", name)
    try:
        parser.parse_args(rest)
    except SystemExit as exc:  # argparse's way of saying the arguments are wrong
        raise AssertionError(f"manage.py {name} {' '.join(rest)}: arguments do not parse") from exc


def check_pip(args: list[str]) -> None:
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    for arg in args:
        match = re.fullmatch(r"django-autoembed\[([\w,-]+)\]", arg)
        if match:
            unknown = set(match[1].split(",")) - extras
            assert not unknown, f"pip install {arg}: no extra {sorted(unknown)}"


def not_run(example: Example) -> None:
    return None


SYBIL = Sybil(
    parsers=[
        CodeBlockParser("python", run_python),
        CodeBlockParser("console", run_console),
        *(CodeBlockParser(lang, not_run) for lang in SHOWN),
    ],
    path=str(DOCS),
)
# The README's examples run too: it is the front door.
PAGES = [
    *sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md") if "_build" not in p.parts),
    "../README.md",
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("page", PAGES)
def test_every_example_on_the_page_runs(page, api):
    document = SYBIL.parse(DOCS / page)
    for example in document:
        example.evaluate()


@pytest.mark.parametrize("page", PAGES)
def test_every_code_block_is_of_a_kind_the_docs_test_runs_or_shows(page):
    text = (DOCS / page).read_text()
    langs = [m["lang"] for m in FENCE.finditer(text) if m["lang"]]
    handled = {"python", "console", *SHOWN}
    # MyST directives ({toctree}, {automodule}, ...) are not code.
    unknown = {lang for lang in langs if lang not in handled and not lang.startswith("{")}
    assert not unknown, f"{page}: code blocks in {sorted(unknown)}: run them or show them as text"


def test_the_readme_is_a_landing_page_whose_links_all_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [t for t in targets if "://" not in t]
    assert local, "the README links into the docs"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"
