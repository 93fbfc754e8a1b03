"""Help that teaches: every command of the real `netvigil` parser has a description,
examples that parse, and help on every option; `--help` prints them."""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rules.command_help import EXAMPLES_HEADING
from sensor.cli import build_parser


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str | None]]:
    """(command words, its parser, its line in the parent's list) for the whole tree."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), sub, listed.get(name)
                yield from _commands(sub, (*path, name))


ROOT = build_parser()
COMMANDS = [((), ROOT, None)] + list(_commands(ROOT))
IDS = [" ".join(words) or "netvigil" for words, _, _ in COMMANDS]


def _examples(parser: argparse.ArgumentParser) -> list[str]:
    _, heading, body = (parser.epilog or "").partition(EXAMPLES_HEADING + "\n")
    return [line.strip() for line in body.splitlines() if line.strip()] if heading else []


def test_the_tree_is_the_whole_command_line() -> None:
    """The walk reaches nested commands (a walk that saw only the top would pass vacuously)."""
    assert {"run", "observe", "status", "replay", "doctor", "rules check", "rules test",
            "rules fields", "enforce block", "enforce list", "enforce status",
            "sinks test"} <= set(IDS)


@pytest.mark.parametrize("words,parser,listed", COMMANDS, ids=IDS)
def test_command_has_description_examples_and_help_on_every_option(
        words: tuple[str, ...], parser: argparse.ArgumentParser, listed: str | None) -> None:
    assert listed or not words, "no help line in its parent's list of commands"
    assert parser.description and len(parser.description) > 40, "no description"
    assert _examples(parser), "no examples: section at the end of the epilog"
    missing = [a.option_strings or a.dest for a in parser._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == [], f"options without help: {missing}"


@pytest.mark.parametrize("words,parser,listed", COMMANDS, ids=IDS)
def test_every_example_is_a_valid_command_line_of_its_command(
        words: tuple[str, ...], parser: argparse.ArgumentParser, listed: str | None) -> None:
    for example in _examples(parser):
        argv = shlex.split(example, comments=True)
        argv = argv[:argv.index("|")] if "|" in argv else argv
        argv = argv[:argv.index(">")] if ">" in argv else argv
        assert argv[0] == "netvigil", example
        commands = [w for w in argv[1:] if not w.startswith("-")]
        it = iter(commands)
        assert all(w in it for w in words), f"{example!r} is not an example of {' '.join(words)}"
        try:
            args = build_parser().parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"example does not parse: {example}")
        assert callable(args.func), example


@pytest.mark.parametrize("words", [w for w, _, _ in COMMANDS], ids=IDS)
def test_help_prints_description_and_examples(words: tuple[str, ...]) -> None:
    parser = dict(zip([w for w, _, _ in COMMANDS], [p for _, p, _ in COMMANDS]))[words]
    done = subprocess.run([sys.executable, "-m", "sensor.cli", *words, "--help"],
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (0, "")
    out = done.stdout
    assert out.startswith(f"usage: netvigil {' '.join(words)}".rstrip())
    assert "\n" + EXAMPLES_HEADING + "\n" in out
    for example in _examples(parser):
        assert f"\n  {example}\n" in out + "\n"
    first_words = " ".join(parser.description.split()[:4])
    assert first_words in " ".join(out.split())
