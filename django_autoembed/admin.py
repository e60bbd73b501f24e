"""Admin: the failures list with retry/discard, and an "embedding present/missing" list filter."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from .batches.records import ProviderBatch
from .changes import EmbeddingChange
from .declarations import registry
from .exceptions import UnknownConfig
from .failures import EmbeddingFailure, discard, retry
from .identity import EmbeddingIdentity
from .usage import EmbeddingUsage


class EmbeddingFilter(admin.SimpleListFilter):
    """``list_filter = [EmbeddingFilter]`` on a model using EmbeddingMixin.

    For a model with several embeddings, ``EmbeddingFilter.for_config("body")``.
    """

    title = "embedding"
    parameter_name = "embedding"
    config: str | None = None

    @classmethod
    def for_config(cls, name: str) -> type[EmbeddingFilter]:
        return type(
            f"EmbeddingFilter_{name}",
            (cls,),
            {"config": name, "title": f"embedding {name}", "parameter_name": f"embedding_{name}"},
        )

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("present", "present"), ("missing", "missing")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() not in ("present", "missing"):
            return queryset
        configs = registry.for_model(queryset.model)
        chosen = [c for c in configs if self.config in (None, c.config_name, c.column)]
        if not chosen:
            raise UnknownConfig(f"{queryset.model._meta.label} has no embedding {self.config!r}.")
        config = chosen[0]
        if config.chunked:  # present: the row has its chunks
            lookup = f"{config.config_name}_chunks__isnull"
            return queryset.filter(**{lookup: self.value() == "missing"}).distinct()
        return queryset.filter(**{f"{config.column}__isnull": self.value() == "missing"})


def chunk_count(config: str | None = None) -> Any:
    """A ``list_display`` column with how many chunks a row's text is stored in.

    ``list_display = ["title", chunk_count()]`` on the admin of a model with a config
    declared with ``chunk_tokens``; name the config when the model has several.
    """

    @admin.display(description="chunks")
    def chunks(obj: Any) -> int:
        configs = [c for c in registry.for_model(type(obj)) if c.chunked]
        chosen = [c for c in configs if config in (None, c.config_name)]
        if not chosen:
            raise UnknownConfig(
                f"{type(obj)._meta.label} stores no embedding {config!r} in chunks."
            )
        return int(getattr(obj, f"{chosen[0].config_name}_chunks").count())

    return chunks


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:  # ModelAdmin takes no type arguments at run time
    _ModelAdmin = admin.ModelAdmin


@admin.register(EmbeddingFailure)
class EmbeddingFailureAdmin(_ModelAdmin):
    list_display = ("config", "object_link", "short_error", "attempts", "last_failed_at")
    list_filter = ("config",)
    search_fields = ("object_pk", "error")
    readonly_fields = (
        "config",
        "table",
        "object_pk",
        "job",
        "error",
        "attempts",
        "first_failed_at",
        "last_failed_at",
    )
    actions = ["retry_selected", "discard_selected"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="object")
    def object_link(self, obj: EmbeddingFailure) -> str:
        try:
            meta = registry.get(obj.config).model_class._meta
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.object_pk])
        except (LookupError, NoReverseMatch):
            return obj.object_pk
        return format_html('<a href="{}">{} {}</a>', url, meta.verbose_name, obj.object_pk)

    @admin.display(description="error")
    def short_error(self, obj: EmbeddingFailure) -> str:
        return obj.error if len(obj.error) <= 120 else obj.error[:117] + "..."

    @admin.action(description="Retry: queue the selected rows again")
    def retry_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        result = retry(queryset)
        if result.queued:
            self.message_user(
                request, f"Queued {result.queued} rows again; the next worker run embeds them."
            )
        for reason in result.refused:
            self.message_user(request, reason, level=messages.WARNING)

    @admin.action(description="Discard the selected failures")
    def discard_selected(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        self.message_user(request, f"Discarded {discard(queryset)} failures.")


class _ReadOnly(_ModelAdmin):
    """Written by the workers; the admin only shows it."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(EmbeddingUsage)
class EmbeddingUsageAdmin(_ReadOnly):
    list_display = ("day", "config", "model", "mode", "requests", "inputs", "tokens", "cost")
    list_filter = ("config", "mode", "model")
    date_hierarchy = "day"

    @admin.display(description="estimated cost (USD)")
    def cost(self, obj: EmbeddingUsage) -> str:
        cost = obj.cost
        return "-" if cost is None else f"{cost:.4f}"


@admin.register(ProviderBatch)
class ProviderBatchAdmin(_ReadOnly):
    list_display = (
        "config",
        "batch_id",
        "state",
        "status",
        "inputs",
        "vectors",
        "failed",
        "tokens",
        "created",
        "finished",
    )
    list_filter = ("config", "state", "status")
    exclude = ("keys", "messages", "lines")


@admin.register(EmbeddingIdentity)
class EmbeddingIdentityAdmin(_ReadOnly):
    list_display = ("config", "provider", "model", "dimensions", "pinned", "clearing", "recorded")


@admin.register(EmbeddingChange)
class EmbeddingChangeAdmin(_ReadOnly):
    list_display = (
        "config",
        "old_model",
        "model",
        "dimensions",
        "began",
        "queued",
        "switched",
        "cut_over",
        "automatic",
    )
