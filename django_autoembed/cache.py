"""Bounded in-process LRUs of vectors, shared by the threads of a process."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any

import numpy as np

from . import settings


class VectorLRU:
    """Least-recently-used vectors by key, as many as ``size()`` says (read at each put, so a
    setting's change applies at once)."""

    def __init__(self, size: Callable[[], int]) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get_many(self, keys: Iterable[Hashable]) -> dict[Hashable, np.ndarray]:
        found = {}
        with self._lock:
            for key in keys:
                vector = self._data.get(key)
                if vector is not None:
                    self._data.move_to_end(key)
                    found[key] = vector
        return found

    def put_many(self, items: Iterable[tuple[Hashable, np.ndarray]]) -> None:
        size = int(self.size())
        if size <= 0:
            return
        with self._lock:
            for key, vector in items:
                self._data[key] = vector
                self._data.move_to_end(key)
            while len(self._data) > size:
                self._data.popitem(last=False)

    def get(self, key: Hashable) -> np.ndarray | None:
        return self.get_many([key]).get(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def provider_key(config: Any) -> tuple[Any, ...]:
    """What makes two vectors of one text interchangeable: provider, model, dimensions, server."""
    return (
        config.provider or settings.current().provider,
        config.get_model(),
        config.get_dimensions(),
        settings.current().base_url,
    )
