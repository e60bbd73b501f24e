"""Reference tables generated from the code, so the docs cannot drift from it.

- ``{autoembed-settings}``: the AUTOEMBED keys, from the fields of ``AutoembedSettings``
  (default, types, meaning). ``:keys:`` renders some of them; every key must then appear
  in one table or the build warns. Each key becomes a target of the ``{setting}`` role.
- ``{autoembed-command} NAME``: one management command's usage and options, from its own
  argparse parser, without the options every Django command takes.
- ``{autoembed-common-options}``: those options, once.
"""

from __future__ import annotations

import argparse
import inspect
import re
from dataclasses import Field, fields
from typing import Any, cast

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx import addnodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.domains.std import StandardDomain
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

logger = logging.getLogger(__name__)

APP = "django_autoembed"
# Options argparse's parser carries but that are no option of the command.
NOT_OPTIONS = {"help", "version"}


def _offline(app: Sphinx, config: Config) -> None:
    """sphinxcontrib-django adds intersphinx inventories on the internet; the docs build
    fetches nothing (a warning is an error, and CI has no internet)."""
    config.intersphinx_mapping = {}  # type: ignore[attr-defined]


# -- small node builders ------------------------------------------------------------------


def _cell(*content: nodes.Node | str) -> nodes.entry:
    paragraph = nodes.paragraph()
    for part in content:
        paragraph += nodes.Text(part) if isinstance(part, str) else part
    return nodes.entry("", paragraph)


def _table(head: list[str], rows: list[nodes.row], widths: list[int]) -> nodes.table:
    group = nodes.tgroup(cols=len(head))
    group += [nodes.colspec(colwidth=w) for w in widths]
    header = nodes.row()
    header += [_cell(h) for h in head]
    group += nodes.thead("", header)
    body = nodes.tbody()
    body += rows
    group += body
    table = nodes.table("", group)
    table["classes"].append("autoembed-reference")
    return table


def _setting_ref(key: str) -> addnodes.pending_xref:
    """A link to an AUTOEMBED key's row (the ``{setting}`` role, from Python)."""
    ref = addnodes.pending_xref(
        "", refdomain="std", reftype="setting", reftarget=key, refexplicit=False
    )
    ref += nodes.literal(key, key)
    return cast(addnodes.pending_xref, ref)


def _source_of(obj: Any) -> str | None:
    try:
        return inspect.getsourcefile(obj)
    except TypeError:
        return None


# -- settings ---------------------------------------------------------------------------


def _settings_fields() -> dict[str, Field[Any]]:
    from django_autoembed.settings import AutoembedSettings

    return {f.name.upper(): f for f in fields(AutoembedSettings)}


def _literal(value: Any) -> str:
    """A default as it is written in settings.py."""
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _types(spec: Field[Any]) -> str:
    return " or ".join("None" if t is None else t.__name__ for t in spec.metadata["types"])


class SettingsTable(SphinxDirective):
    """A table of AUTOEMBED keys: key, default, type, meaning."""

    option_spec = {"keys": directives.unchanged_required}

    def run(self) -> list[nodes.Node]:
        specs = _settings_fields()
        wanted = self.options.get("keys", "").replace(",", " ").split() or list(specs)
        unknown = [k for k in wanted if k not in specs]
        if unknown:
            raise self.error(f"not AUTOEMBED keys: {', '.join(unknown)}")
        from django_autoembed import settings as module
        from django_autoembed.settings import default

        if source := _source_of(module):
            self.env.note_dependency(source)
        std = cast(StandardDomain, self.env.get_domain("std"))
        rows = []
        for key in wanted:
            spec = specs[key]
            target = f"setting-{key.lower().replace('_', '-')}"
            name = _cell(nodes.literal(key, key))
            name["ids"].append(target)
            std.note_object("setting", key, target, location=self.get_location())
            row = nodes.row()
            row += [
                name,
                _cell(nodes.literal(text=_literal(default(key)))),
                _cell(_types(spec)),
                _cell(spec.metadata["doc"]),
            ]
            rows.append(row)
        return [_table(["key", "default", "type", "meaning"], rows, [22, 22, 12, 44])]


def _check_every_setting(app: Sphinx, env: BuildEnvironment) -> None:
    """Where keys are shown a table at a time, a key in no table is a warning."""
    documented = {
        name for name, _, kind, *_ in env.get_domain("std").get_objects() if kind == "setting"
    }
    if not documented:
        return
    for key in _settings_fields():
        if key not in documented:
            logger.warning(
                "AUTOEMBED[%r] is in no {autoembed-settings} table: add it to one's :keys:", key
            )


# -- management commands ---------------------------------------------------------------


def _parser(name: str) -> argparse.ArgumentParser:
    from django.core.management import load_command_class

    command = load_command_class(APP, name)
    return command.create_parser("manage.py", name)


def _django_options() -> set[str]:
    """The destinations of the options every Django command has."""
    from django.core.management.base import BaseCommand

    return {a.dest for a in BaseCommand().create_parser("manage.py", "command")._actions}


def _invocation(action: argparse.Action) -> str:
    """``--batch-size N``, ``--once``, ``CONFIG``: how the option is written."""
    if not action.option_strings:
        return str(action.metavar or action.dest).upper()
    shown = ", ".join(action.option_strings)
    if action.nargs == 0:
        return shown
    return f"{shown} {action.metavar or action.dest.upper()}"


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if not text:  # a warning fails `make docs`: every option says what it does
        logger.warning("option %s has no help text: add help= to it", _invocation(action))
    if "%(" in text:
        text = text % {**vars(action), "prog": "manage.py"}
    return text


# A help text that ends by saying its default: "... (default 100)", "... (default: the
# texts of random rows)", or "... (20)" for an option whose default is 20.
_TRAILING = re.compile(r"\s*\((default:? )?([^()]+)\)$")


def _default_and_help(action: argparse.Action, keys: set[str]) -> tuple[nodes.entry, str]:
    """The option's default cell, and its help without the default the cell shows."""
    text = _help(action)
    found = _TRAILING.search(text)
    said = None
    if found and (found[1] or found[2] == str(action.default)):
        said, text = found[2], text[: found.start()]
    key = action.dest.upper()
    if action.nargs == 0:
        return _cell("—"), text
    if action.default not in (None, [], argparse.SUPPRESS):
        return _cell(nodes.literal(text=str(action.default))), text
    if key in keys:
        from django_autoembed.settings import default

        return _cell(_setting_ref(key), f" ({default(key)})"), text
    if said is not None:
        return _cell(said), text
    return _cell("—"), text


class CommandReference(SphinxDirective):
    """One command of the app: what it does, its usage line, and its own options."""

    required_arguments = 1

    def run(self) -> list[nodes.Node]:
        name = self.arguments[0]
        try:
            parser = _parser(name)
        except (KeyError, ImportError) as exc:
            raise self.error(f"{APP} has no management command {name!r}: {exc}") from exc
        from django.core.management import load_command_class

        if source := _source_of(type(load_command_class(APP, name))):
            self.env.note_dependency(source)
        common = _django_options()
        own = [a for a in parser._actions if a.dest not in common]
        usage = " ".join(
            ["python manage.py", name]
            + [
                _invocation(a) if a.required or not a.option_strings else f"[{_invocation(a)}]"
                for a in own
            ]
        )
        out: list[nodes.Node] = []
        if parser.description:
            out.append(nodes.paragraph(text=parser.description))
        out.append(nodes.literal_block(usage, usage, language="text"))
        if own:
            keys = set(_settings_fields())
            rows = []
            for action in own:
                default, text = _default_and_help(action, keys)
                row = nodes.row()
                row += [_cell(nodes.literal(text=_invocation(action))), default, _cell(text)]
                rows.append(row)
            out.append(_table(["option", "default", "what it does"], rows, [30, 20, 50]))
        return out


class CommonOptions(SphinxDirective):
    """The options every Django command takes, listed once."""

    def run(self) -> list[nodes.Node]:
        from django.core.management.base import BaseCommand

        parser = BaseCommand().create_parser("manage.py", "command")
        rows = []
        for action in parser._actions:
            if action.dest in NOT_OPTIONS:
                continue
            row = nodes.row()
            row += [_cell(nodes.literal(text=_invocation(action))), _cell(_help(action))]
            rows.append(row)
        return [_table(["option", "what it does"], rows, [35, 65])]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", _offline, priority=850)
    # sphinxcontrib-django registers the "setting" type (Django's settings) when it loads
    # first; our keys are targets of the same type, so {setting}`BATCH_SIZE` links here.
    if "setting" not in app.registry.domain_object_types.get("std", {}):
        app.add_crossref_type("setting", "setting")
    app.add_directive("autoembed-settings", SettingsTable)
    app.add_directive("autoembed-command", CommandReference)
    app.add_directive("autoembed-common-options", CommonOptions)
    app.connect("env-check-consistency", _check_every_setting)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
