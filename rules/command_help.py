"""The one shape of a netvigil command's ``--help``: a description, help on every option,
and examples at the end.

Every package's command line registers its commands through :func:`add_command` (and the
top-level parser uses :class:`HelpFormatter` and :func:`examples_epilog`), so prose wraps
to the terminal while examples keep their layout. It lives in ``rules`` because
``rules``, ``alerts`` and ``sensor`` all register commands and ``rules`` may import
neither of the others.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

EXAMPLES_HEADING = "examples:"


class HelpFormatter(argparse.HelpFormatter):
    """Wraps prose paragraphs to the terminal's width and keeps a paragraph with indented
    lines (the examples, lists) as written: argparse's own formatters do one or the other
    for a whole text, never both."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for paragraph in text.split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith(" ") for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(super()._fill_text(paragraph, width, indent))
        return "\n\n".join(out)


def examples_epilog(examples: Sequence[str]) -> str:
    """The ``examples:`` section that ends every ``--help``: one command line each, an
    explanation (if any) after ``#``, as a shell would read it."""
    return EXAMPLES_HEADING + "\n" + "\n".join(f"  {line}" for line in examples)


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, description: str,
                examples: Sequence[str], **kwargs: Any) -> argparse.ArgumentParser:
    """Register command ``name``: ``help`` is its line in the parent's list, ``description``
    its prose (paragraphs separated by a blank line), ``examples`` its command lines."""
    return sub.add_parser(name, help=help, description=description,
                          epilog=examples_epilog(examples), formatter_class=HelpFormatter,
                          **kwargs)
