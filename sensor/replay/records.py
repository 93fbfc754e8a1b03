"""The process records replay's investigation views can still ask for, bounded.

``--tree``, ``--connections`` and ``--export`` show each selected event's process and its
ancestors. Keeping every record ever seen would grow without limit on long recordings;
this store keeps the latest record of every process the replayed process table still
holds (live, or exited within its retention) and of their ancestors, and forgets a
record once the table has forgotten it (after the batch of events decoded with it was
shown) and no kept record names it as parent.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class RecordStore:
    """Process records (dicts as recorded) by exec_id; ancestors pinned by descendants."""

    def __init__(self) -> None:
        self._recs: dict[str, Mapping[str, Any]] = {}
        self._kids: dict[str, int] = {}   # exec_id -> kept records naming it as parent
        self._gone: set[str] = set()      # forgotten by the table, kept for descendants
        self._pending: list[str] = []     # forgotten by the table, dropped at collect()
        self.peak = 0

    def __len__(self) -> int:
        return len(self._recs)

    def __contains__(self, exec_id: object) -> bool:
        return exec_id in self._recs

    def __iter__(self) -> Iterator[str]:
        return iter(self._recs)

    def get(self, exec_id: str | None, default: Any = None) -> Mapping[str, Any] | None:
        """The latest record of ``exec_id``, or ``default``."""
        return self._recs.get(exec_id, default)  # type: ignore[arg-type]

    def put(self, record: Mapping[str, Any]) -> None:
        """Keep (or update) a record the process table now holds."""
        exec_id = record["exec_id"]
        old = self._recs.get(exec_id)
        parent = record.get("parent_exec_id")
        old_parent = old.get("parent_exec_id") if old is not None else None
        if old is None or parent != old_parent:
            if parent:
                self._kids[parent] = self._kids.get(parent, 0) + 1
            if old_parent:
                self._release(old_parent)
        self._recs[exec_id] = record
        self._gone.discard(exec_id)
        if self._pending and exec_id in self._pending:  # back in the table (updated)
            self._pending.remove(exec_id)
        if len(self._recs) > self.peak:
            self.peak = len(self._recs)

    def forget(self, exec_id: str) -> None:
        """The process table forgot ``exec_id``: drop it at the next ``collect()`` (the
        events decoded with it are still being shown), unless a kept record descends
        from it (then it goes with its last descendant)."""
        if exec_id in self._recs:
            self._pending.append(exec_id)

    def collect(self) -> None:
        """Drop the records forgotten since the last call (call between batches)."""
        pending, self._pending = self._pending, []
        for exec_id in pending:
            if exec_id in self._recs:
                self._gone.add(exec_id)
                self._collect(exec_id)

    def _release(self, parent: str) -> None:
        n = self._kids.get(parent, 0) - 1
        if n > 0:
            self._kids[parent] = n
            return
        self._kids.pop(parent, None)
        self._collect(parent)

    def _collect(self, exec_id: str) -> None:
        while exec_id in self._gone and not self._kids.get(exec_id):
            self._gone.discard(exec_id)
            rec = self._recs.pop(exec_id)
            parent = rec.get("parent_exec_id")
            if not parent:
                return
            n = self._kids.get(parent, 0) - 1
            if n > 0:
                self._kids[parent] = n
                return
            self._kids.pop(parent, None)
            exec_id = parent
