"""identity: one spelling of what made a config's vectors, so that no rename is a change."""

from django_autoembed.declarations import EmbeddingConfig
from django_autoembed.identity import Identity, declared


def test_a_builtin_provider_named_by_its_class_path_is_that_provider(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "openai", "DIMENSIONS": 1536}
    by_name = declared(EmbeddingConfig(fields=["t"], model="text-embedding-3-small"))
    by_path = declared(
        EmbeddingConfig(
            fields=["t"],
            model="text-embedding-3-small",
            provider="django_autoembed.providers.openai.OpenAIProvider",
        )
    )
    assert by_name == by_path == Identity("openai", "text-embedding-3-small", 1536)


def test_the_local_model_with_or_without_its_hub_prefix_is_one_model(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "local", "DIMENSIONS": 384}
    short = declared(EmbeddingConfig(fields=["t"], model="all-MiniLM-L6-v2"))
    long = declared(EmbeddingConfig(fields=["t"], model="sentence-transformers/all-MiniLM-L6-v2"))
    assert short == long == Identity("local", "all-MiniLM-L6-v2", 384)


def test_another_model_or_size_is_another_identity(settings):
    settings.AUTOEMBED = {**settings.AUTOEMBED, "PROVIDER": "openai", "DIMENSIONS": 1536}
    small = declared(EmbeddingConfig(fields=["t"], model="text-embedding-3-small"))
    assert small != declared(EmbeddingConfig(fields=["t"], model="text-embedding-3-large"))
    assert small != declared(
        EmbeddingConfig(fields=["t"], model="text-embedding-3-small", dimensions=512)
    )
    assert str(small) == "openai text-embedding-3-small (1536 dimensions)"


def test_an_openai_model_name_given_to_the_local_provider_is_the_local_model(settings):
    # LocalProvider embeds a text-embedding-* name with its packaged model.
    settings.AUTOEMBED = {
        **settings.AUTOEMBED,
        "PROVIDER": "local",
        "MODEL": "text-embedding-3-small",
        "DIMENSIONS": 384,
    }
    inherited = declared(EmbeddingConfig(fields=["t"]))
    assert inherited == declared(EmbeddingConfig(fields=["t"], model="all-MiniLM-L6-v2"))
