"""`netvigil rules ...` sub-commands: check, test, fields."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from rich.console import Console

from rules import rule_tests
from rules.command_help import add_command
from rules.errors import SNIPPET_WIDTH, RuleLoadError
from rules.fields import field_rows
from rules.loader import load_rules


#: (stream, --color choice) -> the console a person reads (the command line owner's factory)
ConsoleFactory = Callable[[TextIO, str], Console]


def register(sub: argparse._SubParsersAction,
             console: ConsoleFactory = lambda stream, _color: Console(file=stream)) -> None:
    """Add `rules check|test|fields` to the top-level parser; load errors are printed on a
    console from `console`."""
    p = add_command(
        sub, "rules", help="check, test and list rule fields",
        description="Tools for writing rules (Falco's language plus netvigil's enforce: key; "
                    "docs/rules.md): check files before deploying them, run them over sample "
                    "events, list the fields they can use.",
        examples=["netvigil rules check /etc/netvigil/rules.d",
                  "netvigil rules test local.yaml --events cases.jsonl --expect expected.jsonl",
                  "netvigil rules fields | grep k8s."])
    rsub = p.add_subparsers(dest="rules_command", required=True, metavar="ACTION",
                            help="what to do (each has its own --help)")

    c = add_command(
        rsub, "check", help="load rules files and report every problem",
        description="Load the files as `netvigil run` would and report every problem as "
                    "file:line:col, the offending line and a caret under the offending token "
                    "(in colour on a terminal; see --color and NO_COLOR). Unknown fields, "
                    "macros and lists get a did-you-mean. Exit 0 when everything loads "
                    "(skipped rules are listed), 1 otherwise.",
        examples=["netvigil rules check local.yaml",
                  "netvigil rules check rules/default /etc/netvigil/rules.d",
                  "netvigil rules check --skip-unsupported falco_rules.yaml   # Falco's own rules"])
    c.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory")
    c.add_argument("--skip-unsupported", action="store_true",
                   help="skip rules using fields/event types netvigil lacks (listed)")
    c.set_defaults(func=lambda args: cmd_check(args, console))

    t = add_command(
        rsub, "test", help="run rules over JSON-lines events; compare with expected",
        description="Run the rules over events (one JSON object a line, fields as in "
                    "docs/events.md). Without --expect, print the alerts in the expected-file "
                    "format; with it, compare and exit 1 with a diff on any difference.",
        examples=["netvigil rules test local.yaml --events cases.jsonl > expected.jsonl   # review it",
                  "netvigil rules test local.yaml --events cases.jsonl --expect expected.jsonl",
                  "netvigil rules test rules/default local.yaml --events cases.jsonl --expect expected.yaml"])
    t.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory")
    t.add_argument("--events", required=True, type=Path, help="events, one JSON object a line")
    t.add_argument("--expect", type=Path,
                   help='expected alerts: JSON lines (or YAML list) of {"rule", "evt.num"}; '
                        "evt.num is the event's, else its line number in --events")
    t.add_argument("--skip-unsupported", action="store_true",
                   help="skip rules using fields/event types netvigil lacks")
    t.set_defaults(func=lambda args: cmd_test(args, console))

    f = add_command(
        rsub, "fields", help="list the fields rules can use",
        description="Every field a condition or output can use: its type, what it means, "
                    "how a derived field derives, and which event types set it (the table of "
                    "docs/events.md).",
        examples=["netvigil rules fields", "netvigil rules fields --json | jq -r '.[].name'"])
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=cmd_fields)


def _load(args: argparse.Namespace, console: ConsoleFactory):
    try:
        return load_rules(args.paths, skip_unsupported=args.skip_unsupported)
    except RuleLoadError as exc:
        out = console(sys.stderr, getattr(args, "color", None) or "auto")
        # on a terminal the shown part of a line, its indent and "..." at both ends fit a row
        width = min(SNIPPET_WIDTH, out.width - 10) if out.is_terminal else SNIPPET_WIDTH
        out.print(exc.styled(max(width, 20)), soft_wrap=True)
        return None


def cmd_check(args: argparse.Namespace, console: ConsoleFactory) -> int:
    """Exit 0 when the rules load; else print file:line:col errors and exit 1."""
    ruleset = _load(args, console)
    if ruleset is None:
        return 1
    for s in ruleset.skipped:
        where = s.position.prefix() if s.position else s.file
        print(f"{where}: skipped rule {s.name!r}: unsupported {', '.join(s.reasons)}")
    for note in ruleset.notes:
        print(f"note: {note}")
    enabled = sum(1 for r in ruleset.rules if r.enabled)
    print(f"OK: {len(ruleset)} rules loaded ({enabled} enabled), "
          f"{len(ruleset.skipped)} skipped as unsupported")
    return 0


def cmd_test(args: argparse.Namespace, console: ConsoleFactory) -> int:
    """Print the alerts, or compare them with --expect (exit 1 and a diff on mismatch)."""
    ruleset = _load(args, console)
    if ruleset is None:
        return 1
    actual = rule_tests.run(ruleset, args.events)
    if args.expect is None:
        sys.stdout.write(rule_tests.to_jsonl(actual))
        return 0
    expected = rule_tests.read_expected(args.expect)
    lines = rule_tests.diff(expected, actual)
    if lines:
        print(f"FAIL: {len(lines)} difference(s) between {args.expect} and the alerts:")
        for line in lines:
            print(line)
        return 1
    print(f"OK: {len(actual)} alert(s) as expected")
    return 0


def cmd_fields(args: argparse.Namespace) -> int:
    """The field catalogue as a table (or JSON)."""
    rows = field_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    w_name = max(len(r["name"]) for r in rows)
    w_type = max(len(r["type"]) for r in rows)
    print(f"{'FIELD':<{w_name}}  {'TYPE':<{w_type}}  DESCRIPTION [EVENT TYPES]")
    for r in rows:
        types = "" if r["event_types"] == "all" else f" [{r['event_types']}]"
        derived = f" ({r['derivation']})" if r["derivation"] else ""
        print(f"{r['name']:<{w_name}}  {r['type']:<{w_type}}  {r['description']}{derived}{types}")
    return 0
