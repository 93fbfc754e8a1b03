"""`netvigil` command line: one sub-command per concern, each registered by its owner."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

import alerts.cli
import rules.cli
from alerts.errors import AlertsError
from rules.errors import RulesError
from sensor import doctor, run_command
from sensor.enforcement import cli as enforce_cli
from sensor.replay import cli as replay_cli
from sensor.errors import SensorError

USER_ERRORS = (SensorError, RulesError, AlertsError)


def build_parser() -> argparse.ArgumentParser:
    """The full `netvigil` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(prog="netvigil", description="eBPF runtime security sensor")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run_command.register(sub)
    rules.cli.register(sub)
    replay_cli.register(sub)
    enforce_cli.register(sub)
    alerts.cli.register(sub)
    doctor.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="netvigil: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"netvigil: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
