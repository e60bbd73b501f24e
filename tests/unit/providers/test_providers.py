"""providers: how a provider is named in status and logs."""


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
