"""`netvigil rules ...` sub-commands: check, test, fields."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rules import rule_tests
from rules.errors import RuleLoadError
from rules.fields import field_rows
from rules.loader import load_rules


def register(sub: argparse._SubParsersAction) -> None:
    """Add `rules check|test|fields` to the top-level parser."""
    p = sub.add_parser("rules", help="check, test and list rule fields")
    rsub = p.add_subparsers(dest="rules_command", required=True, metavar="ACTION")

    c = rsub.add_parser("check", help="load rules files and report every problem")
    c.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory")
    c.add_argument("--skip-unsupported", action="store_true",
                   help="skip rules using fields/event types netvigil lacks (listed)")
    c.set_defaults(func=cmd_check)

    t = rsub.add_parser("test", help="run rules over JSON-lines events; compare with expected")
    t.add_argument("paths", nargs="+", metavar="PATH", help="rules file or directory")
    t.add_argument("--events", required=True, type=Path, help="events, one JSON object a line")
    t.add_argument("--expect", type=Path,
                   help='expected alerts: JSON lines (or YAML list) of {"rule", "evt.num"}')
    t.add_argument("--skip-unsupported", action="store_true")
    t.set_defaults(func=cmd_test)

    f = rsub.add_parser("fields", help="list the fields rules can use")
    f.add_argument("--json", action="store_true", help="print JSON")
    f.set_defaults(func=cmd_fields)


def _load(args: argparse.Namespace):
    try:
        return load_rules(args.paths, skip_unsupported=args.skip_unsupported)
    except RuleLoadError as exc:
        print(exc.render(), file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    """Exit 0 when the rules load; else print file:line:col errors and exit 1."""
    ruleset = _load(args)
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


def cmd_test(args: argparse.Namespace) -> int:
    """Print the alerts, or compare them with --expect (exit 1 and a diff on mismatch)."""
    ruleset = _load(args)
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
