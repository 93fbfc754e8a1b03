"""The process table: one record per exec, ancestry, and bounded history of exits.

Events refer to their process by `exec_id`; the table turns that into the flat
`proc.*`/`user.*`/`container.*`/`k8s.*` fields of an event. It is fed by exec, fork and
exit events live, and by recorded process records on replay, so it never reads the host
itself: a `loader` callable (see `sensor.procfs`) fills in processes it has not seen.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

MAX_ANCESTORS = 16
"""How many ancestors `proc.aname`/`proc.apid` carry (Falco's own limit is similar)."""


@dataclass(slots=True)
class ProcessRecord:
    """What the sensor knows about one exec of one process."""

    exec_id: str
    pid: int
    ppid: int
    parent_exec_id: str | None
    name: str
    exe: str
    exepath: str
    args: list[str]
    uid: int
    gid: int
    cgroup_id: int
    container_id: str
    start_ns: int
    exit_ns: int | None = None
    exit_code: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    """Extra event fields by Falco name (user.name, container.image, k8s.pod.name ...)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for recording and JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessRecord:
        """Inverse of `to_dict` (unknown keys are ignored, for forward compatibility)."""
        try:  # fast path: a complete record, as the recorder writes them
            return cls(data["exec_id"], data["pid"], data["ppid"], data["parent_exec_id"],
                       data["name"], data["exe"], data["exepath"], list(data["args"] or ()),
                       data["uid"], data["gid"], data["cgroup_id"], data["container_id"],
                       data["start_ns"], data["exit_ns"], data["exit_code"],
                       dict(data["meta"] or {}))
        except KeyError:
            pass
        known = {k: data[k] for k in cls.__slots__ if k in data}  # type: ignore[attr-defined]
        known["args"] = list(known.get("args") or [])
        known["meta"] = dict(known.get("meta") or {})
        return cls(**known)

    @property
    def cmdline(self) -> str:
        """Falco's `proc.cmdline`: the name followed by the arguments."""
        return " ".join([self.name, *self.args]) if self.args else self.name


def make_exec_id(boot_id: str, pid: int, start_ns: int) -> str:
    """An id unique on the host across pid reuse: boot id, pid and start time."""
    return f"{boot_id[:8]}:{pid}:{start_ns}"


Loader = Callable[[int], "ProcessRecord | None"]


class ProcessTable:
    """Process records by exec_id and by live pid, with cached event fields.

    Exited processes stay resolvable for `exited_retention_ns` (and at most
    `max_exited` of them), so events that arrive after an exit still resolve.
    """

    def __init__(
        self,
        loader: Loader | None = None,
        *,
        exited_retention_ns: int = 30 * 1_000_000_000,
        max_exited: int = 20_000,
    ) -> None:
        self._records: dict[str, ProcessRecord] = {}
        self._live: dict[int, str] = {}
        self._fields: dict[str, dict[str, Any]] = {}
        self._exited: deque[tuple[int, str]] = deque()
        self._loader = loader
        self._retention = exited_retention_ns
        self._max_exited = max_exited
        self.on_add: Callable[[ProcessRecord], None] | None = None
        """Called with every record added (the recorder hooks in here)."""
        self.on_evict: Callable[[str], None] | None = None
        """Called with the exec_id of every exited record forgotten (replay hooks in here)."""

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ProcessRecord]:
        return iter(list(self._records.values()))

    @property
    def live_count(self) -> int:
        """Processes currently alive as far as the table knows."""
        return len(self._live)

    def add(self, record: ProcessRecord) -> ProcessRecord:
        """Insert (or replace) a record; it becomes the live process for its pid."""
        previous = self._records.get(record.exec_id)
        self._records[record.exec_id] = record
        self._fields.pop(record.exec_id, None)
        if record.exit_ns is None:
            self._live[record.pid] = record.exec_id
        elif previous is None or previous.exit_ns is None:
            # known only after its exit (e.g. a recorded record): forgotten like the others
            if self._live.get(record.pid) == record.exec_id:
                del self._live[record.pid]
            self._exited.append((record.exit_ns, record.exec_id))
        if self.on_add is not None:
            self.on_add(record)
        return record

    def get(self, exec_id: str) -> ProcessRecord | None:
        """The record of an exec, live or recently exited."""
        return self._records.get(exec_id)

    def by_pid(self, pid: int) -> ProcessRecord | None:
        """The live record of a pid, loading it through the loader when unknown."""
        exec_id = self._live.get(pid)
        if exec_id is not None:
            return self._records[exec_id]
        if self._loader is None:
            return None
        record = self._loader(pid)
        if record is None:
            return None
        if record.parent_exec_id is None and record.ppid:
            parent = self.by_pid(record.ppid) if record.ppid != pid else None
            if parent is not None:
                record.parent_exec_id = parent.exec_id
        return self.add(record)

    def fork(self, parent_pid: int, child_pid: int, time_ns: int, exec_id: str) -> ProcessRecord:
        """A new process: same image as its parent until it execs."""
        parent = self.by_pid(parent_pid)
        if parent is None:
            child = ProcessRecord(exec_id, child_pid, parent_pid, None, "", "", "", [], -1, -1, 0, "host", time_ns)
        else:
            child = ProcessRecord(
                exec_id, child_pid, parent_pid, parent.exec_id, parent.name, parent.exe,
                parent.exepath, list(parent.args), parent.uid, parent.gid, parent.cgroup_id,
                parent.container_id, time_ns, meta=dict(parent.meta),
            )
        return self.add(child)

    def exec(self, record: ProcessRecord) -> ProcessRecord:
        """A new image in an existing process: it keeps the parent of the old image."""
        previous = self.by_pid(record.pid)
        if previous is not None:
            if record.parent_exec_id is None:
                record.parent_exec_id = previous.parent_exec_id
                record.ppid = previous.ppid
            self._retire(previous, record.start_ns)
        elif record.parent_exec_id is None and record.ppid:
            parent = self.by_pid(record.ppid)
            if parent is not None:
                record.parent_exec_id = parent.exec_id
        return self.add(record)

    def exit(self, pid: int, time_ns: int, code: int | None) -> ProcessRecord | None:
        """Mark a pid's process exited; it stays resolvable for the retention period."""
        exec_id = self._live.get(pid)
        if exec_id is None:
            return None
        record = self._records[exec_id]
        record.exit_code = code
        self._retire(record, time_ns)
        return record

    def _retire(self, record: ProcessRecord, time_ns: int) -> None:
        if record.exit_ns is None:
            record.exit_ns = time_ns
        if self._live.get(record.pid) == record.exec_id:
            del self._live[record.pid]
        self._exited.append((time_ns, record.exec_id))
        self.evict(time_ns)

    def evict(self, now_ns: int) -> int:
        """Forget exited records older than the retention period; returns how many."""
        removed = 0
        exited = self._exited
        while exited and (exited[0][0] < now_ns - self._retention or len(exited) > self._max_exited):
            _, exec_id = exited.popleft()
            record = self._records.get(exec_id)
            if record is not None and record.exit_ns is not None:
                del self._records[exec_id]
                self._fields.pop(exec_id, None)
                removed += 1
                if self.on_evict is not None:
                    self.on_evict(exec_id)
        return removed

    def fields(self, exec_id: str) -> dict[str, Any]:
        """The event fields of a process (cached; do not mutate the result)."""
        cached = self._fields.get(exec_id)
        if cached is not None:
            return cached
        record = self._records.get(exec_id)
        if record is None:
            return {"proc.exec_id": exec_id}
        parent = self._records.get(record.parent_exec_id) if record.parent_exec_id else None
        result: dict[str, Any] = {
            "proc.exec_id": record.exec_id,
            "proc.pid": record.pid,
            "proc.ppid": record.ppid,
            "proc.name": record.name,
            "proc.exe": record.exe,
            "proc.exepath": record.exepath,
            "proc.cmdline": record.cmdline,
            "proc.args": " ".join(record.args),
            "proc.start_time": record.start_ns,
            "proc.cgroup_id": record.cgroup_id,
            "user.uid": record.uid,
            "group.gid": record.gid,
            "container.id": record.container_id,
        }
        if parent is not None:
            pfields = self.fields(parent.exec_id)
            result["proc.pexec_id"] = parent.exec_id
            result["proc.pname"] = parent.name
            result["proc.pexepath"] = parent.exepath
            result["proc.pcmdline"] = parent.cmdline
            result["proc.aname"] = [parent.name, *pfields.get("proc.aname", ())][:MAX_ANCESTORS]
            result["proc.apid"] = [parent.pid, *pfields.get("proc.apid", ())][:MAX_ANCESTORS]
        else:
            result["proc.aname"] = []
            result["proc.apid"] = []
        result.update(record.meta)
        self._fields[exec_id] = result
        return result

    def invalidate(self, exec_id: str) -> None:
        """Drop cached fields after a record's metadata changed (e.g. pod enrichment)."""
        self._fields.pop(exec_id, None)
