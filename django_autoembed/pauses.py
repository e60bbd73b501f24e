"""Provider pauses: a configuration error (bad key, unknown model, wrong dimensions) stops work.

Workers and the endpoint record the pause here so ``autoembed_status`` can
show it, refresh it while they keep failing, and clear it once the provider
accepts the configuration again. A pause nobody refreshed for a while is
over (the processes that saw it were restarted with a fixed configuration).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, models, transaction
from django.utils import timezone

if TYPE_CHECKING:
    from .exceptions import ProcessingPaused

# A pause not refreshed for this long is over.
STALE_AFTER = timedelta(minutes=3)

# When this process last cleared each provider's pause after seeing it answer: another
# process may record a pause at any time, so a success clears it again, at most this often.
CLEAR_EVERY = 10.0
_cleared: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


class ProviderPause(models.Model):
    """Embedding through one provider is paused by a configuration error."""

    provider = models.CharField(
        max_length=255, unique=True, help_text="name, model and server; no secrets"
    )
    error = models.TextField()
    since = models.DateTimeField(auto_now_add=True)
    last_seen = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "django_autoembed"
        ordering = ["provider"]

    def __str__(self) -> str:
        return f"{self.provider} paused since {self.since:%Y-%m-%d %H:%M}: {self.error[:80]}"


def record_pause(using: str, paused: ProcessingPaused, *, retry_in: float) -> None:
    """Say (or say again) that ``paused.provider`` is paused; never fails the caller."""
    with _lock:
        _cleared.pop((using, paused.provider), None)
    try:
        with transaction.atomic(using=using):
            what = "misconfigured" if paused.kind == "config" else "unavailable"
            ProviderPause.objects.using(using).update_or_create(
                provider=paused.provider[:255],
                defaults={"error": f"{what}: {paused.error} (next try in {retry_in:.0f} s)"},
            )
    except (
        DatabaseError
    ):  # the table may be missing (not migrated) or not granted; the log still says it
        pass


def answered(using: str, providers: Iterable[str]) -> None:
    """These providers answered: their pause, recorded by any process, is over."""
    now = time.monotonic()
    with _lock:
        due = [p for p in providers if now - _cleared.get((using, p), -CLEAR_EVERY) >= CLEAR_EVERY]
        _cleared.update(((using, p), now) for p in due)
    for provider in due:
        clear_pause(using, provider)


def clear_pause(using: str, provider: str) -> None:
    try:
        with transaction.atomic(using=using):
            ProviderPause.objects.using(using).filter(provider=provider[:255]).delete()
    except DatabaseError:
        pass


def current(using: str) -> list[ProviderPause]:
    """Pauses still in force (refreshed lately)."""
    cutoff = timezone.now() - STALE_AFTER
    return list(ProviderPause.objects.using(using).filter(last_seen__gte=cutoff))


def as_dicts(pauses: list[ProviderPause]) -> list[dict[str, Any]]:
    return [
        {
            "provider": p.provider,
            "error": p.error,
            "since": p.since.isoformat(),
            "last_seen": p.last_seen.isoformat(),
        }
        for p in pauses
    ]
