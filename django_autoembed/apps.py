from __future__ import annotations

from django.apps import AppConfig


class AutoembedConfig(AppConfig):
    name = "django_autoembed"
    verbose_name = "Automatic embeddings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created
        from django.db.models.signals import post_migrate

        from . import checks, dbchecks, sync  # noqa: F401  (registers checks)
        from .hnsw.scan import install_wrapper

        post_migrate.connect(sync.post_migrate_sync, sender=self, dispatch_uid="autoembed.sync")
        # Every connection applies a search's HNSW settings to that search's statements only.
        connection_created.connect(install_wrapper, dispatch_uid="autoembed.hnsw_settings")
