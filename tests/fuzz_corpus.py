"""Generated bad inputs for every command that reads a user file (rules, configs, recordings).

Each :class:`Case` is one bad input and the command line that reads it. The corpus is
deterministic (seeded) so before/after figures compare the same inputs; it is used by
tests/test_fuzz_inputs.py (in-process, plus a subprocess sample) and by
bench/fuzz_inputs.py (every case in a subprocess, for the before/after figures).

A case is *bad* by construction: a correct netvigil must exit non-zero, print a message
naming the file (``names``), never a traceback, within a generous time and memory bound.
"""
from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

VALID_RULES = """\
- list: shell_binaries
  items: [bash, sh, zsh]
- macro: spawned_shell
  condition: proc.name in (shell_binaries)
- rule: Shell in container
  desc: a shell was started in a container
  condition: evt.type = execve and spawned_shell and container.id != host
  output: "shell %proc.name (parent %proc.pname) in %container.id"
  priority: WARNING
  tags: [container, shell]
- rule: Outbound to metadata service
  desc: connect to the cloud metadata address
  condition: >
    evt.type = connect and fd.rip = 169.254.169.254
    and not proc.name in (curl, wget)
  output: "metadata access by %proc.name"
  priority: NOTICE
"""

VALID_CONFIG = """\
sensor:
  ringbuf_pages: 1024
rules:
  skip_unsupported: true
record:
  enabled: true
  max_segment_size: 8MiB
  max_total_size: 64MiB
  flush_interval: 1s
alerts:
  sinks:
    console:
      type: stdout
    hook:
      type: webhook
      url: http://127.0.0.1:9/alerts
      delivery:
        queue_size: 100
        timeout: 2s
enforce:
  enabled: true
  max_entries: 1000
"""

ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8))


@dataclass
class Case:
    """One bad input: ``build(dir)`` writes it and returns the path; ``argv`` reads it."""

    kind: str                      # rules | config | recording
    name: str                      # class/detail, e.g. "control-byte NUL at 120"
    build: Callable[[Path], Path]
    commands: tuple[str, ...]      # which commands read it: "check", "run", "sinks", ...
    as_nobody: bool = False        # permission cases: run as an unprivileged user

    def argv(self, command: str, path: Path, scratch: Path) -> list[str]:
        """netvigil arguments running ``command`` on ``path``."""
        rules = scratch / "ok-rules.yaml"
        return {
            "check": ["rules", "check", str(path)],
            "run": ["run", "--config", str(path), "--rules", str(rules),
                    "--record", str(scratch / "rec"), "--duration", "0.1"],
            "sinks": ["sinks", "test", "--config", str(path)],
            "replay": ["replay", str(path), "--rules", str(rules), "--strict"],
            "check-rec": ["replay", "--check", str(path)],
        }[command]


def _text_file(name: str, text: str | bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return p
    return build


def _unreadable_dir(inner_name: str, content: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        sub = d / "locked"
        sub.mkdir()
        (sub / inner_name).write_bytes(content)
        sub.chmod(0o000)
        return sub
    return build


def _unreadable_inner(inner_name: str, content: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        sub = d / "dir"
        sub.mkdir()
        (sub / inner_name).write_bytes(content)
        (sub / inner_name).chmod(0o000)
        sub.chmod(0o755)
        return sub
    return build


def _unreadable_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        p = d / name
        p.write_bytes(content)
        p.chmod(0o000)
        return p
    return build


def _or_chain(n: int, bad_tail: str) -> str:
    terms = " or ".join(f"fd.rport = {1000 + i % 60000}" for i in range(n))
    return ("- rule: long\n  desc: d\n  condition: evt.type = connect and (" + terms +
            f") and {bad_tail}\n  output: o\n  priority: INFO\n")


def rules_cases(rng: random.Random) -> Iterator[Case]:
    """Bad rules files through `rules check`."""
    valid = VALID_RULES.encode()
    ctl = {"NUL": 0, "ESC": 0x1B, "BEL": 0x07, "DEL": 0x7F, "C1": 0x9B}
    for label, byte in ctl.items():
        for _ in range(4):
            at = rng.randrange(len(valid))
            ins = chr(byte).encode()
            yield Case("rules", f"control {label} at {at}",
                       _text_file("r.yaml", valid[:at] + ins + valid[at:]), ("check",))
    for _ in range(6):
        at = rng.randrange(len(valid))
        yield Case("rules", f"not UTF-8 at {at}",
                   _text_file("r.yaml", valid[:at] + b"\xff\xfe" + valid[at:]), ("check",))
    yield Case("rules", "alias bomb", _text_file("r.yaml", "- " + ALIAS_BOMB.replace(
        "\n", "\n  ").rstrip() + "\n"), ("check",))
    yield Case("rules", "alias bomb in a rule value", _text_file(
        "r.yaml", "- list: l\n  items: &a [a, a, a, a, a, a, a, a, a]\n" + "".join(
            f"- list: l{i}\n  items: &b{i} [{', '.join(['*' + ('a' if i == 0 else f'b{i - 1}')] * 9)}]\n"
            for i in range(7))), ("check",))
    for depth in (2_000, 20_000):
        yield Case("rules", f"nested sequences {depth}",
                   _text_file("r.yaml", "[" * depth + "]" * depth + "\n"), ("check",))
        yield Case("rules", f"nested mappings {depth}",
                   _text_file("r.yaml", "{a: " * depth + "1" + "}" * depth + "\n"), ("check",))
    for n in (2_000, 5_000):
        for tail in ("proc.nmae = x", "fd.rport = notaport", "(proc.name = a"):
            yield Case("rules", f"or-chain {n} then {tail!r}",
                       _text_file("r.yaml", _or_chain(n, tail)), ("check",))
    yield Case("rules", "and-chain 5000 unknown macro", _text_file(
        "r.yaml", "- rule: long\n  desc: d\n  condition: evt.type = connect and " +
        " and ".join(f"fd.rport != {i}" for i in range(5000)) + " and no_such_macro\n"
        "  output: o\n  priority: INFO\n"), ("check",))
    yield Case("rules", "unbalanced paren", _text_file(
        "r.yaml", "- rule: r\n  desc: d\n  condition: (evt.type = connect and proc.name = x\n"
        "  output: o\n  priority: INFO\n"), ("check",))
    yield Case("rules", "duplicate key", _text_file(
        "r.yaml", "- rule: r\n  desc: d\n  desc: e\n  condition: evt.type = connect\n"
        "  output: o\n  priority: INFO\n"), ("check",))
    yield Case("rules", "tab indentation", _text_file(
        "r.yaml", "- rule: r\n\tdesc: d\n"), ("check",))
    for _ in range(6):
        at = rng.randrange(40, len(valid) - 40)
        yield Case("rules", f"truncated at {at} + stray quote",
                   _text_file("r.yaml", valid[:at] + b'"'), ("check",))
    yield Case("rules", "empty directory name is a file of garbage",
               _text_file("r.yaml", b"\x00" * 64), ("check",))
    yield Case("rules", "unreadable rules directory", _unreadable_dir("a.yaml", valid),
               ("check",), as_nobody=True)
    yield Case("rules", "unreadable file in a rules directory",
               _unreadable_inner("a.yaml", valid), ("check",), as_nobody=True)
    yield Case("rules", "unreadable rules file", _unreadable_file("r.yaml", valid),
               ("check",), as_nobody=True)
    yield Case("rules", "huge list of values", _text_file(
        "r.yaml", "- list: big\n  items: [" + ", ".join(f"v{i}" for i in range(50_000)) +
        "]\n- rule: r\n  desc: d\n  condition: proc.name in (big) and evt.type = nosuch\n"
        "  output: o\n  priority: INFO\n"), ("check",))


CONFIG_COMMANDS = ("run", "sinks")


def _cfg(text: str, name: str = "nv.yaml") -> Callable[[Path], Path]:
    return _text_file(name, text)


def config_cases(rng: random.Random) -> Iterator[Case]:
    """Bad config files through `run --config` and `sinks test --config`."""
    valid = VALID_CONFIG.encode()
    for label, byte in (("NUL", 0), ("ESC", 0x1B), ("BEL", 7)):
        for _ in range(3):
            at = rng.randrange(len(valid))
            yield Case("config", f"control {label} at {at}",
                       _cfg(valid[:at] + bytes([byte]) + valid[at:]), CONFIG_COMMANDS)
    for _ in range(4):
        at = rng.randrange(len(valid))
        yield Case("config", f"not UTF-8 at {at}",
                   _cfg(valid[:at] + b"\xff\xfe" + valid[at:]), CONFIG_COMMANDS)
    for depth in (3_000, 30_000):
        yield Case("config", f"nested {depth}", _cfg(
            "alerts:\n  sinks: " + "{a: " * depth + "1" + "}" * depth + "\n"), CONFIG_COMMANDS)
        yield Case("config", f"nested list {depth}", _cfg(
            "sensor: " + "[" * depth + "]" * depth + "\n"), CONFIG_COMMANDS)
    bomb = ALIAS_BOMB.replace("\n", "\n  ")
    yield Case("config", "alias bomb in a size", _cfg(
        "anchors:\n  " + bomb + "\nrecord:\n  max_segment_size: *i\n"), CONFIG_COMMANDS)
    yield Case("config", "alias bomb in a sink setting", _cfg(
        "alerts:\n  x-anchors:\n    " + ALIAS_BOMB.replace("\n", "\n    ") +
        "\n  sinks:\n    s:\n      type: stdout\n      format: *i\n"), CONFIG_COMMANDS)
    yield Case("config", "alias bomb in record.enabled", _cfg(
        "record:\n  enabled: &b [" + ", ".join(["x"] * 10) + "]\n" + "".join(
            f"  k{i}: &b{i} [{', '.join(['*b' if i == 0 else f'*b{i - 1}'] * 10)}]\n"
            for i in range(8))), CONFIG_COMMANDS)
    silently = [
        ("duplicate section", "record:\n  enabled: false\nrecord:\n  enabled: true\n"),
        ("duplicate key", "sensor:\n  ringbuf_pages: 64\n  ringbuf_pages: 128\n"),
        ("duplicate sink", "alerts:\n  sinks:\n    a: {type: stdout}\n    a: {type: stdout}\n"),
        ("unknown key sensor.ringbuff_pages", "sensor:\n  ringbuff_pages: 64\n"),
        ("unknown key rules.pathz", "rules:\n  pathz: [/x]\n"),
        ("unknown key alerts.sinks.s.delivery.timout",
         "alerts:\n  sinks:\n    s:\n      type: stdout\n      delivery:\n        timout: 2s\n"),
        ("unknown key enforce.safety.dnss", "enforce:\n  safety:\n    dnss: false\n"),
        ("non-bool rules.skip_unsupported", "rules:\n  skip_unsupported: 'no'\n"),
        ("non-bool rules.skip_unsupported int", "rules:\n  skip_unsupported: 0\n"),
        ("non-bool record.enabled", "record:\n  enabled: 'false'\n"),
        ("non-bool sink enabled", "alerts:\n  sinks:\n    s: {type: stdout, enabled: 'off'}\n"),
        ("non-bool enforce.persist", "enforce:\n  persist: 'yes'\n"),
        ("webhook URL with CRLF", "alerts:\n  sinks:\n    h:\n      type: webhook\n"
         "      url: \"http://127.0.0.1:9/a\\r\\nX-Injected: 1\"\n"),
        ("webhook URL with LF", "alerts:\n  sinks:\n    h:\n      type: webhook\n"
         "      url: \"http://127.0.0.1:9/a\\nb\"\n"),
        ("webhook URL with NUL", "alerts:\n  sinks:\n    h:\n      type: webhook\n"
         "      url: \"http://127.0.0.1:9/a\\0b\"\n"),
        ("webhook URL with TAB", "alerts:\n  sinks:\n    h:\n      type: webhook\n"
         "      url: \"http://127.0.0.1:9/\\ta\"\n"),
        ("falcosidekick URL with CR", "alerts:\n  sinks:\n    f:\n      type: falcosidekick\n"
         "      url: \"http://127.0.0.1:9/\\r\"\n"),
    ]
    for name, text in silently:
        yield Case("config", name, _cfg(text), CONFIG_COMMANDS)
    numbers = [
        ("sensor.ringbuf_pages", "sensor:\n  ringbuf_pages: {}\n",
         ("0", "-1", "3", "abc", "1.5", "1000000000000", "[]", "true")),
        ("record.max_segment_size", "record:\n  max_segment_size: {}\n",
         ("0", "-5", "1e400", "99999999999999999999TiB", "1 d", "[1]")),
        ("record.flush_interval", "record:\n  flush_interval: {}\n", ("0", "-1s", "forever", ".nan", "1e400")),
        ("alerts delivery.queue_size", "alerts:\n  delivery:\n    queue_size: {}\n",
         ("0", "-3", "1e12", "'10'")),
        ("alerts noise.rate_limit.rate", "alerts:\n  noise:\n    rate_limit:\n      rate: {}\n",
         ("0", "-1", ".inf", ".nan")),
        ("enforce.max_entries", "enforce:\n  max_entries: {}\n", ("0", "70000", "'x'", "true")),
        ("enforce.sweep_interval", "enforce:\n  sweep_interval: {}\n", ("0", "-1", ".nan", ".inf")),
    ]
    for key, template, values in numbers:
        for v in values:
            yield Case("config", f"{key} = {v}", _cfg(template.format(v)), CONFIG_COMMANDS)
    for _ in range(4):
        at = rng.randrange(10, len(valid) - 10)
        yield Case("config", f"truncated at {at} + '['", _cfg(valid[:at] + b"\n  x: ["),
                   CONFIG_COMMANDS)
    yield Case("config", "top level list", _cfg("- a\n- b\n"), CONFIG_COMMANDS)
    yield Case("config", "a directory", lambda d: (d / "nv.yaml").mkdir() or d / "nv.yaml",
               CONFIG_COMMANDS)
    yield Case("config", "missing file", lambda d: d / "missing.yaml", CONFIG_COMMANDS)
    yield Case("config", "unreadable file", _unreadable_file("nv.yaml", valid),
               CONFIG_COMMANDS, as_nobody=True)


REC_COMMANDS = ("replay", "check-rec")


def make_recording(directory: Path, *, seed: int = 11, n: int = 600, host: str = "node-1",
                   max_segment_bytes: int = 10 << 10) -> Path:
    """A small valid recording of a few segments (synthetic events)."""
    from sensor.recording import Recorder  # noqa: PLC0415
    from sensor.recording.synthetic import SyntheticNode  # noqa: PLC0415

    node = SyntheticNode(seed=seed, suspicious_every=0)
    with Recorder(directory, host=host, boot_id="b", version="v", flush_interval_s=3600,
                  max_segment_bytes=max_segment_bytes) as rec:
        for i, (kind, x) in enumerate(node.stream(n)):
            getattr(rec, kind)(x)
            if i % 100 == 99:
                rec.flush()
    return directory


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("seg-*.nvseg"))


def _recording(change: Callable[[Path, random.Random], None], seed: int
               ) -> Callable[[Path], Path]:
    def build(d: Path) -> Path:
        rec = d / "rec"
        cached = _TEMPLATE.get("dir")
        if cached is None or not cached.exists():
            cached = Path(os.environ.get("TMPDIR", "/tmp")) / f"nv-fuzz-template-{os.getpid()}"
            shutil.rmtree(cached, ignore_errors=True)
            make_recording(cached)
            _TEMPLATE["dir"] = cached
        shutil.copytree(cached, rec)
        change(rec, random.Random(seed))
        return rec
    return build


_TEMPLATE: dict[str, Path] = {}


def _truncate(rec: Path, rng: random.Random) -> None:
    seg = rng.choice(_segments(rec))
    data = seg.read_bytes()
    # cut, then the start of a record that never ends: a torn tail, never a clean cut
    seg.write_bytes(data[:rng.randrange(1, len(data) - 1)] + b"\x94\x01")


def _flip(rec: Path, rng: random.Random) -> None:
    seg = rng.choice(_segments(rec))
    data = bytearray(seg.read_bytes())
    for _ in range(3):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    seg.write_bytes(bytes(data))


def _zero(rec: Path, rng: random.Random) -> None:
    seg = rng.choice(_segments(rec))
    data = bytearray(seg.read_bytes())
    a = rng.randrange(len(data) - 64)
    data[a:a + 64] = bytes(64)
    seg.write_bytes(bytes(data))


def _remove_middle(rec: Path, rng: random.Random) -> None:
    segs = _segments(rec)
    segs[len(segs) // 2].unlink()


def _duplicate(rec: Path, rng: random.Random) -> None:
    segs = _segments(rec)
    src = rng.choice(segs[:-1])
    last = int(segs[-1].name[4:14])
    shutil.copy(src, rec / f"seg-{last + 1:010d}.nvseg")


def _duplicate_middle(rec: Path, rng: random.Random) -> None:
    segs = _segments(rec)
    gap = segs[1]
    data = segs[0].read_bytes()
    gap.unlink()
    gap.write_bytes(data)


def _reorder(rec: Path, rng: random.Random) -> None:
    segs = _segments(rec)
    a, b = segs[0], segs[1]
    tmp = rec / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)


def _foreign(rec: Path, rng: random.Random) -> None:
    other = rec.parent / "other"
    make_recording(other, seed=5, n=300)
    segs = _segments(rec)
    last = int(segs[-1].name[4:14])
    shutil.copy(_segments(other)[0], rec / f"seg-{last + 1:010d}.nvseg")


def _foreign_replace(rec: Path, rng: random.Random) -> None:
    other = rec.parent / "other"
    make_recording(other, seed=5, n=300)
    segs = _segments(rec)
    shutil.copy(_segments(other)[-1], segs[1])


def _garbage_segment(rec: Path, rng: random.Random) -> None:
    segs = _segments(rec)
    segs[0].write_bytes(bytes(rng.randrange(256) for _ in range(300)))


def _empty_segment(rec: Path, rng: random.Random) -> None:
    _segments(rec)[-1].write_bytes(b"")


def recording_cases(rng: random.Random) -> Iterator[Case]:
    """Damaged recordings through `replay --strict` and `replay --check`."""
    seeds = iter(range(1000, 2000))
    for change, count in ((_truncate, 5), (_flip, 6), (_zero, 4)):
        for _ in range(count):
            yield Case("recording", f"{change.__name__[1:]} #{_}",
                       _recording(change, next(seeds)), REC_COMMANDS)
    for change in (_remove_middle, _duplicate, _duplicate_middle, _reorder, _foreign,
                   _foreign_replace, _garbage_segment, _empty_segment):
        yield Case("recording", change.__name__[1:], _recording(change, next(seeds)),
                   REC_COMMANDS)

    def locked(d: Path) -> Path:
        rec = _recording(lambda r, g: None, 1)(d)
        rec.chmod(0o000)
        return rec

    def locked_segment(d: Path) -> Path:
        rec = _recording(lambda r, g: None, 1)(d)
        _segments(rec)[1].chmod(0o000)
        return rec
    yield Case("recording", "unreadable recording directory", locked, REC_COMMANDS,
               as_nobody=True)
    yield Case("recording", "unreadable segment", locked_segment, REC_COMMANDS, as_nobody=True)


def all_cases(seed: int = 15) -> list[Case]:
    """The whole corpus (deterministic for a seed)."""
    rng = random.Random(seed)
    return [*rules_cases(rng), *config_cases(rng), *recording_cases(rng)]


def ok_rules(scratch: Path) -> Path:
    """A valid rules file the `run` and `replay` cases use (their input is elsewhere)."""
    p = scratch / "ok-rules.yaml"
    p.write_text(VALID_RULES)
    return p
