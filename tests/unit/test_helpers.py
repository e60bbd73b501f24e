"""Small pure pieces: names, SQL sections, the index's DDL, job validation, error kinds, grants."""

import json

import httpx2
import openai
import pytest
from django.db import models

from django_autoembed import sql as sqlfiles
from django_autoembed.declarations import short_name
from django_autoembed.exceptions import InvalidValue, ProviderError
from django_autoembed.grants import Privilege
from django_autoembed.hnsw.indexes import HnswIndex
from django_autoembed.hnsw.scan import MARK, SearchDistance
from django_autoembed.providers.base import chunk_inputs
from django_autoembed.providers.openai import _explain, _kind
from django_autoembed.queue import parse_posted

TARGET = {"schema": "public", "table": "t", "contentFunction": "f", "embeddingColumn": "c"}


def test_short_names_stay_within_postgres_limits_and_stable():
    assert short_name("App", "Some Table", "col") == "app_some_table_col"
    long = short_name("x" * 80, "embedding", limit=30)
    assert len(long) == 30 and long == short_name("x" * 80, "embedding", limit=30)


def test_sql_sections_are_named_and_trimmed():
    sections = sqlfiles.sections("queue.sql")
    assert sections["read"].startswith("select msg_id, read_ct, message, vt from pgmq.read(")
    assert "--" not in sections["delete"]


def test_our_hnsw_index_equals_pgvectors_with_the_same_arguments():
    from pgvector.django import HnswIndex as PgvectorHnsw

    kwargs = {
        "name": "i",
        "fields": ["embedding"],
        "m": 16,
        "ef_construction": 64,
        "opclasses": ["halfvec_cosine_ops"],
    }
    ours = HnswIndex(**kwargs)
    assert ours == PgvectorHnsw(**kwargs) and PgvectorHnsw(**kwargs) == ours
    assert ours != PgvectorHnsw(**{**kwargs, "m": 8})
    assert ours.deconstruct()[0] == "django_autoembed.hnsw.indexes.HnswIndex"
    from django_autoembed.indexes import HnswIndex as Old  # migrations written before the move

    assert Old is HnswIndex
    assert ours.with_params() == ["m = 16", "ef_construction = 64"]
    assert isinstance(ours, models.Index)


def test_valid_jobs_pass_and_packed_ones_too():
    jobs = [{"jobId": 1, "id": 5, **TARGET}, {"jobId": 2, "ids": [1, "x"], **TARGET}]
    posted = parse_posted(jobs)
    assert [job.body for job in posted] == jobs
    assert [(job.job_id, job.row_ids) for job in posted] == [(1, [5]), (2, [1, "x"])]
    assert posted[1].target.table == TARGET["table"]


@pytest.mark.parametrize(
    ("job", "says"),
    [
        ({"jobId": 1, **TARGET}, "lacks id"),
        ({"jobId": 1, "ids": [], **TARGET}, "1 to 10000"),
        ({"jobId": 1, "ids": [1, {}], **TARGET}, "each of ids must be"),
        ({"jobId": 0, "id": 1, **TARGET}, "positive"),
        ({"jobId": 1, "id": 2**64, **TARGET}, "out of range"),
        ({"jobId": 1, "id": 1, **TARGET, "table": "x" * 256}, "at most 255"),
    ],
)
def test_invalid_jobs_say_what_is_wrong(job, says):
    with pytest.raises(InvalidValue, match=says):
        parse_posted([job])


def test_the_search_expression_carries_its_settings_in_a_comment():
    expression = SearchDistance("embedding", [1.0, 0.0], ef_search=64)
    assert expression.ef_search == 64 and MARK == "autoembed:hnsw"
    assert SearchDistance("embedding", [1.0, 0.0]).ef_search is None


ERRORS = {
    400: openai.BadRequestError,
    401: openai.AuthenticationError,
    403: openai.PermissionDeniedError,
    404: openai.NotFoundError,
    422: openai.UnprocessableEntityError,
    429: openai.RateLimitError,
}


def status_error(status: int, body: dict) -> openai.APIStatusError:
    """The error the openai client raises for a response of ``status`` with ``body``."""
    request = httpx2.Request("POST", "http://127.0.0.1/v1/embeddings")
    response = httpx2.Response(status, request=request, content=json.dumps(body).encode())
    cls = ERRORS.get(status, openai.InternalServerError if status >= 500 else openai.APIStatusError)
    return cls(
        f"Error code: {status} - {body['error']['message']}", response=response, body=body["error"]
    )


@pytest.mark.parametrize(
    ("status", "param", "kind"),
    [
        (401, None, "config"),
        (403, None, "config"),
        (404, None, "config"),
        (400, "dimensions", "config"),
        (400, "model", "config"),
        (400, None, "input"),
        (413, None, "input"),
        (422, None, "input"),
        (429, None, "throttled"),
        (500, None, "transient"),
        (503, None, "transient"),
        (408, None, "transient"),
    ],
)
def test_openai_statuses_are_sorted_into_config_input_and_passing_errors(status, param, kind):
    error = status_error(
        status, {"error": {"message": "m", "type": "t", "param": param, "code": None}}
    )
    assert _kind(error) == kind
    ProviderError("x", kind=kind)  # a kind the error type accepts


def test_a_401_says_which_setting_to_fix():
    error = status_error(401, {"error": {"message": "Incorrect API key provided", "type": "t"}})
    assert "AUTOEMBED['API_KEY']" in _explain(error, "m") and "Error code" not in _explain(
        error, "m"
    )


def test_a_grant_statement_quotes_the_role():
    privilege = Privilege("table", '"Notes With Spaces"', ("SELECT", "UPDATE"))
    assert (
        privilege.grant("App Role")
        == 'grant select, update on table "Notes With Spaces" to "App Role";'
    )


def test_requests_are_packed_by_tokens_and_inputs():
    texts = ["a" * 30] * 10  # 11 estimated tokens each
    assert list(chunk_inputs(texts, max_inputs=4, max_tokens=1000)) == [(0, 4), (4, 8), (8, 10)]
    assert list(chunk_inputs(texts, max_inputs=100, max_tokens=25)) == [
        (0, 2),
        (2, 4),
        (4, 6),
        (6, 8),
        (8, 10),
    ]


def test_every_error_the_package_raises_descends_from_autoembed_error():
    """Callers catch AutoembedError (or the built-in kind it also is) for anything we raise."""
    import ast
    import builtins
    from pathlib import Path

    import django_autoembed
    from django_autoembed import exceptions

    # Not errors of ours: a module's missing attribute, a command's exit, a programming
    # mistake in calling ProviderError itself.
    allowed = {("__init__.py", "AttributeError"), ("exceptions.py", "ValueError")}
    root = Path(django_autoembed.__file__).parent
    found = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                found.add((path.name, name))
    strays = []
    for file, name in sorted(found):
        cls = getattr(exceptions, name, None) or getattr(builtins, name, None)
        if name == "CommandError" or (file, name) in allowed:
            continue
        if not (isinstance(cls, type) and issubclass(cls, exceptions.AutoembedError)):
            strays.append(f"{file}: {name}")
    assert not strays, strays
    assert issubclass(exceptions.InvalidValue, ValueError)
    assert issubclass(exceptions.UnknownConfig, LookupError)


def test_the_package_has_no_import_cycles_at_module_level():
    """Imports inside functions are how a module reaches upward; its top level never does."""
    import ast
    from pathlib import Path

    import django_autoembed

    root = Path(django_autoembed.__file__).parent
    modules = {
        ".".join(p.relative_to(root).with_suffix("").parts).removesuffix("__init__").rstrip("."): p
        for p in root.rglob("*.py")
        if "migrations" not in p.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        deps = graph.setdefault(name, set())
        for node in ast.parse(path.read_text()).body:  # the top level only
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                for alias in node.names:
                    sub = f"{target}.{alias.name}".lstrip(".")
                    deps.add(sub if sub in modules else target)
    state: dict[str, int] = {}

    def visit(name: str, trail: list[str]) -> None:
        if state.get(name) == 2:
            return
        assert state.get(name) != 1, " -> ".join([*trail, name])
        state[name] = 1
        for dep in graph.get(name, ()):
            if dep != name and dep in modules:
                visit(dep, [*trail, name])
        state[name] = 2

    for name in graph:
        visit(name, [])


def test_a_providers_name_in_status_and_logs_holds_no_secret_of_its_url(settings):
    from django_autoembed.declarations import registry
    from django_autoembed.providers import label, pause_key

    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "BASE_URL": "https://user:s3cret@proxy.example:8443/v1?api-key=s3cret",
    }
    config = registry.get("testapp.Document.embedding")
    assert label(config) == "openai text-embedding-3-small at https://proxy.example:8443/v1"
    assert "s3cret" not in pause_key(config)
