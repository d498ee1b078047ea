"""A bounded, thread-safe least-recently-used map: the per-process caches of the tracker store use it."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Hashable, Optional


class LruCache:
    """At most ``size`` entries; putting or reading an entry makes it the newest, the oldest is dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: "OrderedDict[Hashable, Any]" = OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def get(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def pop(self, key: Hashable) -> Optional[Any]:
        """The entry, removed (None if there is none)."""
        with self._lock:
            return self._entries.pop(key, None)

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
