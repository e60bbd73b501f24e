"""declarations: names that fit Postgres."""

from django_autoembed.declarations import short_name


def test_short_names_stay_within_postgres_limits_and_stable():
    assert short_name("App", "Some Table", "col") == "app_some_table_col"
    long = short_name("x" * 80, "embedding", limit=30)
    assert len(long) == 30 and long == short_name("x" * 80, "embedding", limit=30)
