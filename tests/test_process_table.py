"""The process table: ancestry fields, exec/fork/exit bookkeeping, bounded history."""
from __future__ import annotations

from sensor.process_table import ProcessRecord, ProcessTable


def rec(exec_id: str, pid: int, name: str, parent: str | None = None, ppid: int = 0, start: int = 0) -> ProcessRecord:
    return ProcessRecord(exec_id, pid, ppid, parent, name, name, f"/bin/{name}", ["-x"], 0, 0, 1, "host", start)


def test_fields_carry_parent_and_ancestor_chain() -> None:
    t = ProcessTable()
    t.add(rec("a", 1, "init"))
    t.add(rec("b", 10, "sh", "a", 1))
    t.add(rec("c", 20, "python", "b", 10))
    t.add(rec("d", 30, "curl", "c", 20))
    f = t.fields("d")
    assert f["proc.pname"] == "python" and f["proc.pcmdline"] == "python -x"
    assert f["proc.aname"] == ["python", "sh", "init"] and f["proc.apid"] == [20, 10, 1]
    assert f["proc.cmdline"] == "curl -x" and f["proc.args"] == "-x"


def test_exec_keeps_the_parent_of_the_forked_image() -> None:
    t = ProcessTable()
    t.add(rec("p", 5, "bash"))
    t.fork(5, 6, 100, "child")
    assert t.fields("child")["proc.name"] == "bash" and t.fields("child")["proc.pname"] == "bash"
    t.exec(rec("new", 6, "nc", start=200))
    f = t.fields("new")
    assert f["proc.name"] == "nc" and f["proc.pname"] == "bash" and f["proc.ppid"] == 5
    assert t.by_pid(6).exec_id == "new"
    assert t.get("child").exit_ns == 200  # the old image is history, not live


def test_exited_processes_resolve_for_the_retention_period_only() -> None:
    t = ProcessTable(exited_retention_ns=1000)
    t.add(rec("a", 1, "sh"))
    t.exit(1, 5000, 3)
    assert t.by_pid(1) is None and t.get("a").exit_code == 3
    assert t.fields("a")["proc.name"] == "sh"  # a late event still resolves
    t.evict(5500)
    assert t.get("a") is not None
    t.evict(7000)
    assert t.get("a") is None and len(t) == 0


def test_history_is_bounded_by_count() -> None:
    t = ProcessTable(exited_retention_ns=10**18, max_exited=10)
    for pid in range(100):
        t.add(rec(f"e{pid}", pid, "x"))
        t.exit(pid, pid, 0)
    assert len(t) <= 11


def test_loader_fills_unknown_pids_and_links_parents() -> None:
    known = {7: rec("seven", 7, "sshd"), 8: rec("eight", 8, "bash", ppid=7)}
    t = ProcessTable(loader=known.get)
    r = t.by_pid(8)
    assert r is not None and r.parent_exec_id == "seven"
    assert t.fields("eight")["proc.pname"] == "sshd"
    assert t.by_pid(9) is None


def test_record_round_trips_through_a_dict() -> None:
    r = rec("x", 3, "nc")
    r.meta["k8s.pod.name"] = "web-1"
    again = ProcessRecord.from_dict({**r.to_dict(), "future_field": 1})
    assert again == r


def test_records_known_only_after_exit_are_forgotten_and_evictions_are_announced() -> None:
    t = ProcessTable(exited_retention_ns=100)
    gone: list[str] = []
    t.on_evict = gone.append
    t.add(rec("live", 1, "init"))
    done = rec("done", 2, "sh", "live", 1, start=10)
    done.exit_ns, done.exit_code = 50, 0
    t.add(done)                                  # e.g. a recorded record, already exited
    assert t.by_pid(2) is None and t.get("done") is not None
    t.exit(1, 60, 0)
    t.evict(155)
    assert gone == ["done"] and t.get("done") is None and t.get("live") is not None
    t.evict(200)
    assert gone == ["done", "live"] and len(t) == 0
