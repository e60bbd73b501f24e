"""Declarations through makemigrations: add, alter, remove; forward and back; checks; golden SQL."""

import re
from pathlib import Path

import pytest
from django.apps.registry import Apps
from django.core.management import call_command
from django.db import connection, models
from django.db.migrations import Migration
from django.db.migrations.autodetector import MigrationAutodetector
from django.db.migrations.questioner import NonInteractiveMigrationQuestioner
from django.db.migrations.state import ModelState, ProjectState

from django_autoembed import EmbeddingConfig, EmbeddingMixin
from django_autoembed import checks as autoembed_checks
from django_autoembed.declarations import registry
from django_autoembed.triggers import EmbeddingTrigger
from tests.testapp.models import Article

GOLDEN = Path(__file__).parent.parent / "golden"
PACKAGE = Path(__file__).parent.parent.parent / "django_autoembed"


def throwaway(*configs, **fields):
    """A model in its own app registry, as a fresh app's models.py would declare it."""
    attrs = {
        "__module__": "tests.throwaway",
        "title": models.TextField(),
        "body": models.TextField(null=True),
        "Meta": type(
            "Meta", (), {"app_label": "throwaway", "apps": Apps(), "db_table": "throwaway_doc"}
        ),
        **fields,
    }
    if configs:
        attrs["embedding_configs"] = list(configs)
    return type("Doc", (EmbeddingMixin, models.Model), attrs)


def project(model=None):
    state = ProjectState()
    if model is not None:  # the model, and the chunk model made for it, if any
        for each in model._meta.apps.all_models[model._meta.app_label].values():
            state.add_model(ModelState.from_model(each))
    return state


def diff(before, after):
    changes = MigrationAutodetector(
        before, after, NonInteractiveMigrationQuestioner()
    )._detect_changes()
    return [op for migration in changes.get("throwaway", []) for op in migration.operations]


def db_objects():
    with connection.cursor() as cursor:
        cursor.execute(
            "select tgname from pg_trigger where tgrelid = to_regclass('throwaway_doc') order by 1"
        )
        triggers = [r[0] for r in cursor.fetchall()]
        cursor.execute("select proname from pg_proc where proname like 'throwaway%%' order by 1")
        functions = [r[0] for r in cursor.fetchall()]
    return triggers, functions


@pytest.mark.django_db(transaction=True)
def test_add_alter_remove_a_declaration_forward_and_back():
    with connection.cursor() as cursor:  # leftovers of an interrupted run
        cursor.execute("drop table if exists throwaway_doc cascade")

    # the autodetector mutates its states, so each diff gets fresh ones
    def v0():
        return project()

    def v1():
        return project(throwaway(EmbeddingConfig(fields=["title"])))

    def v2():
        return project(
            throwaway(EmbeddingConfig(template="# {title}\n\n{body}", clear_on_update=True))
        )

    def v3():
        return project(throwaway())

    ops = [diff(a(), b()) for a, b in [(v0, v1), (v1, v2), (v2, v3)]]
    names = [[type(op).__name__ for op in o] for o in ops]
    assert names[0] == ["CreateModel"]
    assert sorted(names[1]) == ["AddConstraint", "RemoveConstraint"]
    assert sorted(names[2]) == ["RemoveConstraint", "RemoveField", "RemoveIndex"]

    applied = []
    try:
        state = project()
        for o in ops:
            migration = Migration(f"m{len(applied)}", "throwaway")
            migration.operations = o
            before = state.clone()
            with connection.schema_editor() as editor:
                state = migration.apply(state.clone(), editor)
            applied.append((migration, before))
            if len(applied) == 1:
                assert db_objects() == (
                    [
                        "autoembed_throwaway_doc_embedding_ins",
                        "autoembed_throwaway_doc_embedding_upd",
                    ],
                    ["throwaway_doc_embedding_input"],
                )
            if len(applied) == 2:
                assert db_objects()[0] == [
                    "autoembed_throwaway_doc_embedding_clr",
                    "autoembed_throwaway_doc_embedding_ins",
                    "autoembed_throwaway_doc_embedding_upd",
                ]
                with connection.cursor() as cursor:
                    cursor.execute(
                        "select prosrc from pg_proc where proname = 'throwaway_doc_embedding_input'"
                    )
                    assert "'# '" in cursor.fetchone()[0]
        assert db_objects() == ([], [])
    finally:
        # migrate backwards, newest first, to nothing at all
        for n, (migration, before) in reversed(list(enumerate(applied))):
            with connection.schema_editor() as editor:
                migration.unapply(before.clone(), editor)
            if n == 2:  # back to the template declaration
                assert len(db_objects()[0]) == 3 and db_objects()[1] == [
                    "throwaway_doc_embedding_input"
                ]
    assert db_objects() == ([], [])
    with connection.cursor() as cursor:
        cursor.execute("select to_regclass('throwaway_doc')")
        assert cursor.fetchone()[0] is None


@pytest.mark.django_db(transaction=True)
def test_chunk_tokens_added_and_removed_make_and_drop_the_chunk_table():
    with connection.cursor() as cursor:  # leftovers of an interrupted run
        cursor.execute("drop table if exists throwaway_doc_embedding_chunks, throwaway_doc cascade")

    def plain():
        return project(throwaway(EmbeddingConfig(fields=["title"])))

    def chunked():
        return project(throwaway(EmbeddingConfig(fields=["title"], chunk_tokens=64)))

    create = diff(project(), plain())
    to_chunks, to_plain = diff(plain(), chunked()), diff(chunked(), plain())
    names = sorted(type(op).__name__ for op in to_chunks)
    # The chunk model, its key, index and unique numbers; the row's own vector, index and
    # triggers go.
    assert names == [
        "AddConstraint",
        "AddConstraint",
        "AddField",
        "AddIndex",
        "CreateModel",
        "RemoveConstraint",
        "RemoveField",
        "RemoveIndex",
    ], names
    assert [op.name for op in to_chunks if type(op).__name__ == "CreateModel"] == ["DocChunk"]
    assert "DeleteModel" in {type(op).__name__ for op in to_plain}

    def table(name):
        with connection.cursor() as cursor:
            cursor.execute("select to_regclass(%s) is not null", [name])
            return cursor.fetchone()[0]

    applied, state = [], project()
    try:
        for ops in (create, to_chunks, to_plain):
            migration = Migration(f"m{len(applied)}", "throwaway")
            migration.operations = ops
            before = state.clone()
            with connection.schema_editor() as editor:
                state = migration.apply(state.clone(), editor)
            applied.append((migration, before))
            if len(applied) == 2:
                assert table("throwaway_doc_embedding_chunks")
                assert "autoembed_throwaway_doc_embedding_chunks_del" in db_objects()[0]
        assert not table("throwaway_doc_embedding_chunks") and len(db_objects()[0]) == 2
    finally:
        for migration, before in reversed(applied):
            with connection.schema_editor() as editor:
                migration.unapply(before.clone(), editor)
    assert not table("throwaway_doc")


@pytest.mark.django_db(databases=["default", "other"])
def test_makemigrations_is_quiet_when_nothing_changed():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


def test_rendered_sql_matches_the_golden_file():
    (constraint,) = [c for c in Article._meta.constraints if c.column == "body_embedding"]
    rendered = ";\n".join(constraint.statements(Article)) + ";\n"
    golden = GOLDEN / "article_body_embedding.sql"
    assert rendered == golden.read_text(), (
        "regenerate with: python -m tests.golden (after reviewing the diff)"
    )


def test_every_migration_sql_file_is_used_by_exactly_one_migration():
    files = {p.name for p in (PACKAGE / "sql").glob("*.sql")}
    numbered = {name for name in files if re.match(r"\d{4}_", name)}
    uses = dict.fromkeys(numbered, 0)
    for migration in (PACKAGE / "migrations").glob("0*.py"):
        for name in re.findall(r'sql\.load\("([^"]+)"\)', migration.read_text()):
            uses[name] = uses.get(name, 0) + 1
    assert uses and all(count == 1 for count in uses.values()), uses
    # The rest hold queries the code loads by section, and every one of them is loaded somewhere.
    code = "\n".join(p.read_text() for p in PACKAGE.rglob("*.py"))
    assert all(f'"{name}"' in code for name in files - numbered), files - numbered


def test_fingerprint_changes_with_the_declaration():
    a = EmbeddingTrigger(name="n", column="c", function="f", fields=["title"])
    b = EmbeddingTrigger(name="n", column="c", function="f", fields=["title", "body"])
    assert (
        a.fingerprint() != b.fingerprint()
        and a.fingerprint() == EmbeddingTrigger(**a.deconstruct()[2]).fingerprint()
    )


def check_ids(model, monkeypatch):
    from dataclasses import replace

    configs = [
        replace(c, model_class=model)
        for c in autoembed_checks.registry._configs
        if c.model_class is model
    ]
    monkeypatch.setattr(registry, "declared", lambda: configs)
    return sorted(m.id for m in autoembed_checks.check_declarations())


@pytest.mark.parametrize(
    ("config", "fields", "expected"),
    [
        (EmbeddingConfig(fields=["nope"]), {}, ["autoembed.E001"]),
        (EmbeddingConfig(fields=["data"]), {"data": models.BinaryField()}, ["autoembed.E002"]),
        (EmbeddingConfig(fields=["title"], column="body"), {}, ["autoembed.E004"]),
        (EmbeddingConfig(fields=["title"], dimensions=4096), {}, ["autoembed.E006"]),
        (EmbeddingConfig(content_function="f", text_search="english"), {}, ["autoembed.E012"]),
    ],
)
def test_checks_explain_declarations_that_cannot_work(config, fields, expected, monkeypatch):
    assert check_ids(throwaway(config, **fields), monkeypatch) == expected


def test_two_configs_on_one_column_is_an_error(monkeypatch):
    model = throwaway(
        EmbeddingConfig(fields=["title"], name="a"), EmbeddingConfig(fields=["body"], name="b")
    )
    assert check_ids(model, monkeypatch) == ["autoembed.E007"]


def test_correct_declarations_pass_the_checks():
    assert autoembed_checks.check_declarations() == []


def test_makemigrations_makes_embedding_migrations_depend_on_django_autoembed():
    """An app whose label sorts before django_autoembed must still migrate after it."""
    from django.db.migrations.loader import MigrationLoader

    from django_autoembed.autodetector import AutoembedAutodetector

    graph = MigrationLoader(None, ignore_no_migrations=True).graph

    def dependencies(model):
        detector = AutoembedAutodetector(
            project(),
            project(model),
            NonInteractiveMigrationQuestioner(specified_apps={"throwaway"}),
        )
        changes = detector.changes(graph=graph)
        return [dep for m in changes["throwaway"] for dep in m.dependencies]

    assert ("django_autoembed", "0001_initial") in dependencies(
        throwaway(EmbeddingConfig(fields=["title"]))
    )
    plain = type(
        "Plain",
        (models.Model,),
        {
            "__module__": "tests.throwaway",
            "title": models.TextField(),
            "Meta": type("Meta", (), {"app_label": "throwaway", "apps": Apps()}),
        },
    )
    assert dependencies(plain) == []
    assert call_command("check") is None  # makemigrations and migrate agree on the autodetector
