"""The SQL files: each migration's file is used by exactly one migration, and every named
section of the runtime files is used by the code (none is dead, none is missing)."""

import re
from importlib.resources import files
from pathlib import Path

import django_autoembed
from django_autoembed import sql as sqlfiles

PACKAGE = Path(django_autoembed.__file__).parent


def test_every_migration_sql_file_is_loaded_by_exactly_one_migration():
    names = sorted(p.name for p in (PACKAGE / "sql" / "migrations").glob("*.sql"))
    loads: dict[str, list[str]] = {name: [] for name in names}
    for migration in sorted((PACKAGE / "migrations").glob("0*.py")):
        for name in re.findall(r'sql\.load\("migrations/([^"]+)"\)', migration.read_text()):
            loads.setdefault(name, []).append(migration.name)
    assert {name: len(found) for name, found in loads.items()} == dict.fromkeys(names, 1), loads


def test_every_runtime_section_is_used_and_every_used_one_exists():
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts)
    runtime = sorted(p.name for p in (PACKAGE / "sql").glob("*.sql"))
    unused = []
    for name in runtime:
        for key in sqlfiles.sections(name):
            if not re.search(rf'["\']{key}["\']', code):
                unused.append(f"{name}:{key}")
    assert unused == []
    assert files(sqlfiles.__package__).joinpath("migrations").is_dir()


def test_sections_fill_identifiers_and_keep_literal_braces():
    from psycopg import sql

    statement = sqlfiles.statement("queue.sql", "listen", channel=sql.Identifier("a b"))
    assert statement == 'listen "a b"'
    assert "'{}'" in sqlfiles.statement("checks.sql", "function_search_path")


def test_sql_sections_are_named_and_trimmed():
    sections = sqlfiles.sections("queue.sql")
    assert sections["read"].startswith(
        "select msg_id, read_ct, message, vt, enqueued_at from pgmq.read("
    )
    assert "--" not in sections["delete"]
