"""Provider pauses: a configuration error (bad key, unknown model, wrong dimensions) or an
outage stops the work of one provider, and only of that one.

A pause belongs to one provider key (``providers.pause_key``: name, model,
server, dimensions): the jobs of configs embedded by another keep flowing.
Each process keeps its pauses in a ``PauseBook``: how long each lasts, when
to try again, and whom to tell (a deferred index is built again at once).
Workers and the endpoint also record the pause in ``ProviderPause`` so that
``autoembed_status`` can show it, refresh it while they keep failing, and
clear it once the provider accepts the configuration again. A pause nobody
refreshed for a while is over (the processes that saw it were restarted with
a fixed configuration).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.db import DatabaseError, models, transaction
from django.utils import timezone

from .exceptions import PauseKind

if TYPE_CHECKING:
    from .exceptions import ProcessingPaused

logger = logging.getLogger(__name__)

# A paused provider is tried again after this many seconds, doubling up to PAUSE_MAX:
# sooner after an outage or a rate limit than after a configuration error.
PAUSE_FIRST = {PauseKind.CONFIG: 5.0, PauseKind.UNAVAILABLE: 1.0}
PAUSE_MAX = 60.0
# With a fixed pause (the endpoint), an outage's jobs wait at least this long, or the
# provider's Retry-After, and at most the fixed pause.
OUTAGE_RELEASE_SECONDS = 5.0

# Message ids a process remembers refusing (a model change), pruned past this many.
REFUSED_MEMORY = 100_000

# A pause not refreshed for this long is over.
STALE_AFTER = timedelta(minutes=3)

# When this process last cleared each provider's pause after seeing it answer: another
# process may record a pause at any time, so a success clears it again, at most this often.
CLEAR_EVERY = 10.0
_cleared: dict[tuple[str, str], float] = {}
_lock = threading.Lock()


class ProviderPause(models.Model):
    """Embedding through one provider is paused by a configuration error or an outage."""

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
            what = "misconfigured" if paused.kind is PauseKind.CONFIG else "unavailable"
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


@dataclass
class _Held:
    paused: ProcessingPaused
    until: float
    seconds: float


def grants_key(config: Any) -> str:
    """What a grant missing on a config's tables pauses: that config only."""
    return f"{config.label} (grants)"


class PauseBook:
    """The pauses of one process on one database, by provider key.

    ``fixed``: every configuration error pauses that many seconds, an outage at most
    that long (the endpoint: pg_cron posts again on its own schedule); otherwise pauses
    start at ``PAUSE_FIRST`` and double up to ``PAUSE_MAX`` while the provider keeps
    failing (a worker). ``on_pause`` listeners hear each provider key paused for long: by a
    configuration error, or by an outage once its pause has backed off to ``PAUSE_MAX``.
    """

    def __init__(self, using: str, *, fixed: float | None = None) -> None:
        self.using = using
        self.fixed = fixed
        self.on_pause: list[Callable[[str], None]] = []
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._refused: dict[int, float] = {}  # message id -> when this process refused it
        # A refused config's jobs are hidden briefly, for a worker with the new declaration
        # to take (a rolling deploy); a `--once` run hides them for the pause and ends.
        self.brief_refusals = True

    def refused(self, msg_ids: Iterable[int]) -> None:
        """Remember that this process refused these messages (a model change)."""
        now = time.monotonic()
        with self._lock:
            if len(self._refused) > REFUSED_MEMORY:
                self._refused = {m: t for m, t in self._refused.items() if now - t < PAUSE_MAX}
            self._refused.update(dict.fromkeys(msg_ids, now))

    def refused_lately(self) -> list[int]:
        """The messages this process refused within ``PAUSE_MAX``: `--once` does not wait
        for them (another worker's, or nobody's)."""
        now = time.monotonic()
        with self._lock:
            return [m for m, t in self._refused.items() if now - t < PAUSE_MAX]

    def paused_for(self, key: str) -> float:
        """Seconds before ``key``'s provider is tried again (0: not paused, or due)."""
        with self._lock:
            held = self._held.get(key)
        return max(0.0, held.until - time.monotonic()) if held else 0.0

    def held(self, key: str) -> bool:
        """Whether this process paused ``key`` and has not seen it work since (due or not)."""
        with self._lock:
            return key in self._held

    def pause(self, key: str, paused: ProcessingPaused) -> float:
        """Pause ``key``'s provider; returns the seconds its jobs stay hidden."""
        now = time.monotonic()
        with self._lock:
            held = self._held.get(key)
            first = held is None or held.paused.kind != paused.kind
            seconds = self._seconds(paused, None if first or held is None else held)
            if held is not None and not first and now < held.until:
                seconds = max(seconds, held.until - now)  # another lane's pause still holds
            self._held[key] = _Held(paused, now + seconds, seconds)
        # Listeners hear of a pause that will last: a configuration error, or an outage that
        # has backed off to the maximum (a blip of a second must not rebuild an index).
        lasting = (first and paused.kind is PauseKind.CONFIG) or (
            paused.kind is PauseKind.UNAVAILABLE
            and seconds >= PAUSE_MAX
            and (first or held is None or held.seconds < PAUSE_MAX)
        )
        if first:
            self._say(paused, seconds)
        if lasting:
            for listener in self.on_pause:
                listener(key)
        record_pause(self.using, paused, retry_in=seconds)
        return seconds

    def _seconds(self, paused: ProcessingPaused, held: _Held | None) -> float:
        retry_after = paused.error.retry_after or 0.0
        if self.fixed is not None:
            if paused.kind is PauseKind.CONFIG:
                return self.fixed
            return min(self.fixed, max(OUTAGE_RELEASE_SECONDS, retry_after))
        if held is None:
            seconds = PAUSE_FIRST[paused.kind]
        elif time.monotonic() >= held.until:
            seconds = min(held.seconds * 2, PAUSE_MAX)
        else:
            seconds = held.seconds
        return max(seconds, retry_after)

    def _say(self, paused: ProcessingPaused, seconds: float) -> None:
        if paused.kind is PauseKind.CONFIG:
            logger.error(
                "Embedding paused for %s: %s Nothing was spent: its jobs stay queued, the "
                "other providers' jobs go on, and it is tried again every %.0f-%.0f s until "
                "it accepts the configuration.",
                paused.provider,
                paused.error,
                seconds,
                PAUSE_MAX,
                extra={"provider": paused.provider},
            )
        else:
            logger.warning(
                "Provider unavailable: %s Every request of a batch failed; its jobs stay queued "
                "without spending attempts and are tried again in %.0f s, backing off to %.0f s.",
                paused,
                seconds,
                PAUSE_MAX,
                extra={"provider": paused.provider},
            )

    def answered(self, keys: Iterable[str]) -> None:
        """These providers answered with vectors: their pauses are over."""
        keys = set(keys)
        if not keys:
            return
        with self._lock:
            ended = [self._held.pop(k) for k in keys if k in self._held]
        for held in ended:
            logger.warning("Embedding resumed: %s answers again.", held.paused.provider)
        answered(self.using, keys)

    def in_force(self) -> list[ProcessingPaused]:
        """Every provider this process has paused and not seen answer since."""
        with self._lock:
            return [held.paused for held in self._held.values()]

    def retry_wait(self) -> float | None:
        """Seconds until an outage's pause that has not yet backed off to the maximum is due
        (``--once`` waits for those); None when there is none."""
        with self._lock:
            waits = [
                max(0.0, h.until - time.monotonic())
                for h in self._held.values()
                if h.paused.kind is PauseKind.UNAVAILABLE and h.seconds < PAUSE_MAX
            ]
        return min(waits) if waits else None
