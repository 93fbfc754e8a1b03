"""`netvigil` command line: one sub-command per concern, each registered by its owner."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import alerts
import rules.cli
from rules.command_help import HelpFormatter, examples_epilog
from rules.errors import RulesError
from sensor import __version__, doctor, logging_setup, observe_cli, run_command, status_cli, terminal
from sensor.config import load_config
from sensor.enforcement import cli as enforce_cli
from sensor.replay import cli as replay_cli
from sensor.errors import SensorError

USER_ERRORS = (SensorError, RulesError, alerts.AlertsError)
CONFIG_HELP = ("YAML config file (default: $NETVIGIL_CONFIG, else /etc/netvigil/netvigil.yaml "
               "if present, else the defaults: a stdout sink)")


def read_alerts_section(path: str | None) -> tuple[Mapping[str, Any], str]:
    """The `alerts:` section for `netvigil sinks`, found and validated as for every command
    (sensor.config.config_path); the default stdout sink when it names none."""
    cfg = load_config(path)
    return alerts.with_default_sink(cfg.alerts), cfg.source


def build_parser() -> argparse.ArgumentParser:
    """The full `netvigil` parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="netvigil", formatter_class=HelpFormatter,
        description="eBPF runtime security sensor: watches process and network activity, ties "
                    "every connection to its process, container and pod, evaluates Falco-style "
                    "rules, sends alerts, enforces deny rules and records everything for replay."
                    "\n\n`netvigil COMMAND --help` explains each command, with examples.",
        epilog=examples_epilog([
            "netvigil doctor                       # can the sensor run on this machine?",
            "netvigil run                          # the sensor: alerts on the terminal",
            "netvigil observe --follow             # from another terminal: what the agent sees",
            "netvigil status                       # is the running agent healthy?",
            "netvigil rules check my-rules.yaml    # before deploying a rule",
            "netvigil replay /var/lib/netvigil/recordings --since 1h",
            "netvigil --color never --log-format json run --json",
        ]))
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    parser.add_argument("--version", action="version", version=f"netvigil {__version__}")
    logging_setup.add_arguments(parser)
    terminal.add_color_option(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                help="what to do (each has its own --help)")
    run_command.register(sub)
    observe_cli.register(sub)
    status_cli.register(sub)
    rules.cli.register(sub, terminal.console)
    replay_cli.register(sub)
    enforce_cli.register(sub)
    alerts.register_cli(sub, read_alerts_section, CONFIG_HELP, terminal.console)
    doctor.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as done:   # --help, --version, usage errors: argparse wrote them
            sys.stdout.flush()
            raise done
        logging_setup.configure_from_args(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()
        return code
    except USER_ERRORS as exc:
        logging_setup.report_error(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """stdout's reader closed it (`netvigil ... | head`): stop quietly, as `cat` does.

    Python would report the pipe again when it flushes stdout at exit; point stdout at
    /dev/null so that flush has nowhere to fail.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a command its pipe stopped


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
