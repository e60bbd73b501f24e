"""grants: the statements autoembed_grants prints."""

from django_autoembed.grants import Privilege


def test_a_grant_statement_quotes_the_role():
    privilege = Privilege("table", '"Notes With Spaces"', ("SELECT", "UPDATE"))
    assert (
        privilege.grant("App Role")
        == 'grant select, update on table "Notes With Spaces" to "App Role";'
    )
