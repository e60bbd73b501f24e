"""testapp.RemoteDoc lives in the 'other' database, beside django_autoembed's tables and queue."""

REMOTE = "testapp.RemoteDoc"


class RemoteRouter:
    def db_for_read(self, model, **hints):
        return "other" if model._meta.label == REMOTE else None

    def db_for_write(self, model, **hints):
        return "other" if model._meta.label == REMOTE else None

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        if app_label == "testapp" and model_name == "remotedoc":
            return db == "other"
        if db == "other":
            return app_label == "django_autoembed"
        return None
