"""`netvigil replay ...`: re-run rules over recorded history and investigate it."""
from __future__ import annotations

import argparse
import gc
import sys
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from rich.table import Table

from rules.command_help import add_command
from sensor.recording.reader import Problem
from sensor.terminal import color_of, color_wanted, console
from sensor.replay.errors import ReplayError
from sensor.replay.timespec import format_ns, parse_time_spec

NOTE_KINDS = frozenset({"unclosed"})  # reported, but not an integrity failure
MAX_PROBLEMS_PER_FILE = 20

EXAMPLES = (
    "netvigil replay /var/lib/netvigil/recordings --since 2h",
    "netvigil replay DIR --rules rules/default --rules new.yaml --json",
    "netvigil replay DIR --where 'fd.sip = 203.0.113.9' --tree",
    "netvigil replay DIR --since 2026-11-20T08:00:00Z --until 2026-11-20T09:00:00Z --connections",
    "netvigil replay DIR --where 'k8s.ns.name = shop' --export shop.jsonl",
    "netvigil replay DIR --rules rules/default --rules new.yaml --enforce-preview",
    "netvigil replay DIR --check",
)


def register(sub: argparse._SubParsersAction) -> None:
    """Add `replay` to the top-level parser."""
    p = add_command(
        sub, "replay", help="replay recorded history through rules, investigate it",
        description="Read recordings (segment files or directories) in time order, rebuild "
                    "the process table, and run rules over the events (default: the shipped "
                    "rules), printing alerts as the live sensor does. Integrity problems are "
                    "reported on stderr; replay goes on with what is sound."
                    "\n\nInstead of alerts it can show the process tree (--tree), the "
                    "connections (--connections), the events (--events), what enforcement "
                    "rules would have denied (--enforce-preview), or export the events "
                    "(--export). On a terminal, progress with rate and ETA goes to stderr.",
        examples=EXAMPLES)
    p.add_argument("paths", nargs="+", metavar="PATH", help="segment file or recording directory")
    p.add_argument("--rules", action="append", metavar="PATH",
                   help="rules file or directory (repeatable; default: the shipped rules)")
    p.add_argument("--since", metavar="T", help="start time: RFC 3339, or an age like 2h, 30m")
    p.add_argument("--until", metavar="T", help="end time: RFC 3339, or an age like 10m")
    p.add_argument("--where", metavar="COND",
                   help="only events matching this rule condition, e.g. 'fd.sport = 443'")
    out_fmt = p.add_mutually_exclusive_group()
    out_fmt.add_argument("--json", action="store_true", help="JSON output (default when piped)")
    out_fmt.add_argument("--text", action="store_true",
                         help="readable output even when piped (default on a terminal)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--tree", action="store_true",
                      help="process tree of the selected events, with connections and listeners")
    mode.add_argument("--connections", action="store_true",
                      help="timeline of connections with their processes")
    mode.add_argument("--export", metavar="FILE",
                      help="write the selected events as JSON lines with full process "
                           "ancestry to FILE ('-' = stdout)")
    mode.add_argument("--enforce-preview", action="store_true",
                      help="what the enforcement rules would have denied, per workload")
    mode.add_argument("--events", action="store_true",
                      help="print the selected events (as `netvigil run --events`)")
    mode.add_argument("--recorded-alerts", action="store_true",
                      help="print the alerts the live sensor recorded")
    mode.add_argument("--check", action="store_true",
                      help="only verify the recordings' integrity (exit 1 on problems)")
    p.add_argument("--key-file", metavar="FILE",
                   help="key of keyed (MAC) recordings, to verify their integrity")
    p.add_argument("--skip-unsupported", action="store_true",
                   help="skip rules using unsupported fields instead of failing")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when any integrity problem was found")
    p.set_defaults(func=run)


class _Reporter:
    """Integrity problems on stderr, at most MAX_PROBLEMS_PER_FILE per file."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.per_file: Counter = Counter()
        self.problems = 0
        self.notes = 0

    def __call__(self, problem: Problem) -> None:
        note = problem.kind in NOTE_KINDS
        if note:
            self.notes += 1
        else:
            self.problems += 1
        self.per_file[problem.path] += 1
        if self.per_file[problem.path] <= MAX_PROBLEMS_PER_FILE:
            self.stream.write(f"netvigil: {'note' if note else 'warning'}: {problem}\n")
        elif self.per_file[problem.path] == MAX_PROBLEMS_PER_FILE + 1:
            self.stream.write(f"netvigil: warning: {problem.path}: more problems in this "
                              f"file not shown\n")

    def summary(self) -> str:
        hidden = sum(max(0, n - MAX_PROBLEMS_PER_FILE) for n in self.per_file.values())
        text = f"{self.problems} integrity problem(s)"
        if hidden:
            text += f" ({hidden} not shown)"
        return text


@contextmanager
def _no_gc() -> Iterator[None]:
    """Replay allocates millions of short-lived containers; cyclic GC only slows it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _default_rules() -> list[Path]:
    from rules import DEFAULT_RULES_DIR  # noqa: PLC0415

    return [DEFAULT_RULES_DIR]


def _load_rules(args: argparse.Namespace) -> Any:
    from rules.loader import load_rules  # noqa: PLC0415

    return load_rules(args.rules or _default_rules(), skip_unsupported=args.skip_unsupported)


def _read_key(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        key = Path(path).read_bytes().strip()
    except OSError as exc:
        raise ReplayError(f"--key-file {path}: {exc.strerror}") from None
    if not key:
        raise ReplayError(f"--key-file {path}: file is empty")
    return key


def _where(text: str | None) -> Any:
    if not text:
        return None
    from rules.compiler import compile_condition  # noqa: PLC0415
    from rules.errors import RulesError  # noqa: PLC0415

    try:
        return compile_condition(text)
    except RulesError as exc:
        raise ReplayError(f"--where: {exc}") from None


def run(args: argparse.Namespace) -> int:
    """Run `netvigil replay`; returns the exit code."""
    try:
        return _run(args)
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly, as other Unix tools do
        import os  # noqa: PLC0415

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


def _run(args: argparse.Namespace) -> int:
    from sensor.replay.engine import Replayer, unwatched_types  # noqa: PLC0415
    from sensor.replay.progress import Progress  # noqa: PLC0415

    since = parse_time_spec(args.since, option="--since") if args.since else None
    until = parse_time_spec(args.until, option="--until") if args.until else None
    if since is not None and until is not None and since > until:
        raise ReplayError(f"--since ({format_ns(since)}) is after --until ({format_ns(until)})")
    where = _where(args.where)
    key = _read_key(args.key_file)
    stdout = sys.stdout
    as_json = args.json or (not args.text and not stdout.isatty())
    ruleset = _load_rules(args) if not (args.tree or args.connections or args.export
                                        or args.events or args.recorded_alerts
                                        or args.check) else None
    reporter = _Reporter(sys.stderr)
    keep = bool(args.tree or args.connections or args.export)
    alerts_mode = ruleset is not None and not args.enforce_preview
    replayer = Replayer(args.paths, key=key, since_ns=since, until_ns=until, where=where,
                        report=reporter, keep_records=keep,
                        keep_alerts=bool(args.recorded_alerts),
                        skip_event_type=unwatched_types(ruleset) if alerts_mode else None,
                        prefilter=ruleset if alerts_mode else None)
    color = color_of(args)
    progress = Progress(replayer.total_bytes, lambda: replayer.stats["events_read"], color=color)
    replayer.progress = progress
    lookup = replayer.records.get
    result = ""
    export_file = None
    try:
        with _no_gc():
            if args.tree or args.connections:
                from sensor.replay.views import ConnectionTimeline, ProcessTree  # noqa: PLC0415

                view = (ProcessTree(stdout, lookup, as_json, color) if args.tree
                        else ConnectionTimeline(stdout, lookup, as_json, color))
                for ev in replayer.events():
                    view.add(ev)
                progress.close()
                view.finish()
            elif args.export:
                from sensor.replay.views import Exporter  # noqa: PLC0415

                if args.export == "-":
                    out = stdout
                else:
                    try:
                        out = export_file = open(args.export, "w", encoding="utf-8")  # noqa: SIM115
                    except OSError as exc:
                        raise ReplayError(f"--export {args.export}: {exc.strerror}") from None
                exporter = Exporter(out, lookup)
                for ev in replayer.events():
                    exporter.add(ev)
                exporter.finish()
                result = f"{exporter.count} events exported"
            elif args.enforce_preview:
                from sensor.replay.enforce_preview import EnforcePreview  # noqa: PLC0415

                preview = EnforcePreview(ruleset)
                for ev in replayer.events():
                    preview.observe(ev)
                progress.close()
                preview.write(stdout, as_json)
            elif args.events:
                from sensor.event_output import EventPrinter  # noqa: PLC0415

                printer = EventPrinter(stdout, as_json, color)
                for ev in replayer.events():
                    printer(ev)
            elif args.recorded_alerts:
                for _ in replayer.events():
                    pass
                n = _print_recorded(replayer.recorded_alerts, stdout, as_json, since, until)
                result = f"{n} recorded alerts"
            elif args.check:
                for _ in replayer.events():
                    pass
                progress.close()
                _print_segments(replayer.segment_info, stdout, as_json, color)
            else:
                n = _replay_alerts(replayer, ruleset, stdout, as_json, color)
                result = f"{n} alerts"
    finally:
        progress.close()
        if export_file is not None:
            export_file.close()
    stdout.flush()
    st = replayer.stats
    span = (f", {format_ns(replayer.first_ns)} .. {format_ns(replayer.last_ns)}"
            if replayer.first_ns is not None else "")
    hosts = ", ".join(sorted(replayer.hosts)) or "no host"
    not_built = st["events_unwatched"] + st["events_prefiltered"]
    unwatched = (f" ({not_built:,} that no rule could match were counted, not rebuilt)"
                 if not_built else "")
    sys.stderr.write(
        f"netvigil: replayed {st['events_selected']:,} of {st['events_read']:,} events"
        f"{unwatched} from {st['segments']} segment(s) ({hosts}){span}"
        f"{': ' + result if result else ''}; {reporter.summary()}\n")
    if reporter.problems and (args.strict or args.check):
        return 1
    return 0


def _replay_alerts(replayer: Any, ruleset: Any, stream: TextIO, as_json: bool,
                   color: str = "auto") -> int:
    """Evaluate every selected event and print alerts as the live stdout sink does."""
    from alerts import Alert, format_text  # noqa: PLC0415

    colour = not as_json and color_wanted(stream, color)
    evaluate = ruleset.evaluate
    write = stream.write
    n = 0
    for ev in replayer.events():
        matches = evaluate(ev)
        if not matches:
            continue
        for m in matches:
            alert = Alert.from_match(m, replayer.host)
            n += 1
            write((alert.json_bytes.decode() if as_json else format_text(alert, colour)) + "\n")
    stream.flush()
    return n


def _print_recorded(alerts: list[Mapping[str, Any]], stream: TextIO, as_json: bool,
                    since: int | None, until: int | None) -> int:
    import json  # noqa: PLC0415

    from alerts import Alert, AlertsError, format_text  # noqa: PLC0415

    n = 0
    for data in alerts:
        try:
            alert = Alert.from_dict(data)
        except AlertsError:
            stream.write(json.dumps(data, default=str) + "\n")
            n += 1
            continue
        if (since is not None and alert.time_ns < since) or (
                until is not None and alert.time_ns > until):
            continue
        n += 1
        stream.write((alert.json_bytes.decode() if as_json else format_text(alert, False)) + "\n")
    return n


def _print_segments(info: list[dict[str, Any]], stream: TextIO, as_json: bool,
                    color: str = "auto") -> None:
    """One line per segment read by --check: host, sequence, time range, counts, status."""
    import json  # noqa: PLC0415

    if as_json:
        for seg in info:
            stream.write(json.dumps({**seg, "first": format_ns(seg["first"]),
                                     "last": format_ns(seg["last"])}) + "\n")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for title in ("SEGMENT", "HOST", "FIRST EVENT", "LAST EVENT", "EVENTS", "STATUS"):
        table.add_column(title, no_wrap=True, justify="right" if title == "EVENTS" else "left")
    for seg in info:
        status = "ok" if not seg["problems"] else f"{seg['problems']} problem(s)"
        if not seg["closed"]:
            status += ", open (no footer)"
        table.add_row(Path(seg["file"]).name, seg["host"], format_ns(seg["first"]),
                      format_ns(seg["last"]), f"{seg['events']:,}", status,
                      style="red" if seg["problems"] else None)
    console(stream, color).print(table)
