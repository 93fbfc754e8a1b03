"""`netvigil sinks ...` sub-commands.

The command line owner (sensor/cli.py) passes how the configuration is found and read:
alerts knows nothing of the agent's config file.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from alerts.config import parse_alerts_config
from rules.command_help import add_command
from alerts.sinktest import SinkTestResult, run_sink_tests

#: --config value (None = the default lookup) -> (the raw `alerts:` section, its source name)
AlertsSectionReader = Callable[[str | None], tuple[Mapping[str, Any], str]]
#: (stream, --color choice) -> the console a person reads (the command line owner's factory)
ConsoleFactory = Callable[[TextIO, str], Console]


def register(sub: argparse._SubParsersAction, read_section: AlertsSectionReader,
             config_help: str = "YAML config file",
             console: ConsoleFactory = lambda stream, _color: Console(file=stream)) -> None:
    """Add `sinks test` to the top-level parser; `read_section` finds and reads the config,
    `console` makes the console results are printed on."""
    p = add_command(
        sub, "sinks", help="test configured alert sinks",
        description="The alert sinks of the config file's alerts: section (Slack, webhooks, "
                    "falcosidekick, files, stdout; docs/alerts.md).",
        examples=["netvigil sinks test --config /etc/netvigil/netvigil.yaml"])
    sinks_sub = p.add_subparsers(dest="sinks_command", required=True, metavar="ACTION",
                                 help="what to do (each has its own --help)")
    t = add_command(
        sinks_sub, "test", help="send a test alert to every configured sink and report what happened",
        description="Send one test alert (rule 'netvigil sinks test', priority Notice) to each "
                    "sink of the config file's alerts: section, bypassing routing, and print per "
                    "sink whether it was delivered. Exit status 1 if any sink failed.",
        examples=["netvigil sinks test",
                  "netvigil sinks test --config netvigil.yaml --sink slack --sink sidekick"])
    t.add_argument("--config", metavar="FILE", help=config_help)
    t.add_argument("--sink", metavar="NAME", action="append", default=[],
                   help="test only this sink (repeatable; disabled sinks can be named)")
    t.set_defaults(func=lambda args: cmd_sinks_test(args, read_section, console))


def results_table(results: list[SinkTestResult]) -> Table:
    """One row per sink: ok/FAIL, name, what it is, what happened and how long it took."""
    table = Table(box=None, pad_edge=False, show_header=False)
    for i in range(4):
        table.add_column(no_wrap=i < 3)
    table.add_column("took", justify="right", no_wrap=True)
    for r in results:
        table.add_row(Text("ok" if r.ok else "FAIL", style="green" if r.ok else "bold red"),
                      r.name, r.description, r.detail, f"({r.elapsed_s * 1000:.0f} ms)")
    return table


def cmd_sinks_test(args: argparse.Namespace, read_section: AlertsSectionReader,
                   console: ConsoleFactory) -> int:
    """Run `netvigil sinks test`; 0 if every sink took the test alert, else 1."""
    section, source = read_section(args.config)
    config = parse_alerts_config(section, source)
    results = run_sink_tests(config, args.sink)
    if not results:
        print(f"{source}: no sinks configured in the alerts: section")
        return 1
    out = console(sys.stdout, getattr(args, "color", None) or "auto")
    out.print(results_table(results))
    failed = sum(not r.ok for r in results)
    out.print(f"{len(results) - failed} of {len(results)} sink(s) took the test alert",
              style="bold red" if failed else "bold green")
    return 1 if failed else 0
