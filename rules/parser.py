"""Parse Falco condition text into a syntax tree (precedence: not > and > or)."""
from __future__ import annotations

import re

from rules.ast import And, Compare, ListValue, MacroRef, Node, Not, Or, Value
from rules.errors import RuleSyntaxError
from rules.lexer import UNARY_OPS, Token, tokenize
from rules.source import SourceText

LIST_OPS = frozenset({"in", "intersects", "pmatch"})
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)+)(?:\[(.*)\])?$")
_MACRO = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
MAX_DEPTH = 60


def split_field(word: str) -> tuple[str, str | None] | None:
    """``"proc.aname[2]"`` -> ``("proc.aname", "2")``; None if not a field reference."""
    m = _FIELD.match(word)
    if not m:
        return None
    return m.group(1), m.group(2)


class _Parser:
    def __init__(self, source: SourceText) -> None:
        self.source = source
        self.tokens = tokenize(source.text, source.position)
        self.i = 0
        self.depth = 0

    def error(self, message: str, tok: Token) -> RuleSyntaxError:
        return RuleSyntaxError(message, self.source.position(tok.offset))

    def peek(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def parse(self) -> Node:
        if self.peek().kind == "eof":
            raise self.error("empty condition", self.peek())
        node = self.or_expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(f"unexpected {_describe(tok)}; expected 'and', 'or' or the end",
                             tok)
        return node

    def or_expr(self) -> Node:
        first = self.peek()
        items = [self.and_expr()]
        while self.peek().kind == "word" and self.peek().text == "or":
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items), first.offset)

    def and_expr(self) -> Node:
        first = self.peek()
        items = [self.not_expr()]
        while self.peek().kind == "word" and self.peek().text == "and":
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items), first.offset)

    def not_expr(self) -> Node:
        tok = self.peek()
        if tok.kind == "word" and tok.text == "not":
            self.take()
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error("condition nested too deeply", tok)
            node = Not(self.not_expr(), tok.offset)
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.take()
        if tok.kind == "(":
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.error("condition nested too deeply", tok)
            node = self.or_expr()
            close = self.take()
            if close.kind == "eof":
                raise self.error("expected ')' to close this '(' before the end of the "
                                 "condition", tok)
            if close.kind != ")":
                opened = self.source.position(tok.offset)
                at = f" at {opened.line}:{opened.col}" if opened is not None else ""
                raise self.error(f"expected ')' to close the '('{at}, found "
                                 f"{_describe(close)}", close)
            self.depth -= 1
            return node
        if tok.kind != "word" or tok.text in ("and", "or"):
            raise self.error(f"unexpected {_describe(tok)}; expected a field, a macro, "
                             "'not' or '('", tok)
        nxt = self.peek()
        if nxt.kind != "op":
            if split_field(tok.text) is not None and "." in tok.text:
                raise self.error(f"field {tok.text} needs an operator (=, in, exists, ...)",
                                 nxt if nxt.kind != "eof" else tok)
            if not _MACRO.match(tok.text):
                raise self.error(f"{tok.text!r} is neither a field nor a macro name", tok)
            return MacroRef(tok.text, tok.offset)
        parts = split_field(tok.text)
        if parts is None:
            raise self.error(f"{tok.text!r} is not a field name (fields look like proc.name)",
                             tok)
        op_tok = self.take()
        op = "=" if op_tok.text == "==" else op_tok.text
        if op in UNARY_OPS:
            return Compare(parts[0], parts[1], op, None, tok.offset, op_tok.offset)
        if op in LIST_OPS:
            operand = self.list_operand()
        else:
            operand = self.value()
        return Compare(parts[0], parts[1], op, operand, tok.offset, op_tok.offset)

    def value(self) -> Value:
        tok = self.take()
        if tok.kind == "str":
            return Value(tok.text, True, tok.offset)
        if tok.kind == "word" and tok.text not in ("and", "or", "not"):
            return Value(tok.text, False, tok.offset)
        if tok.kind == "op" and tok.text in ("<", ">"):  # evt.dir = <
            return Value(tok.text, False, tok.offset)
        raise self.error(f"expected a value, found {_describe(tok)}", tok)

    def list_operand(self) -> ListValue:
        tok = self.peek()
        if tok.kind == "word" and tok.text not in ("and", "or", "not"):
            self.take()  # a bare list name: `proc.name in shell_binaries`
            return ListValue((Value(tok.text, False, tok.offset),), tok.offset, bare=True)
        if tok.kind != "(":
            raise self.error(f"expected '(' to start a list, found {_describe(tok)}", tok)
        self.take()
        items: list[Value] = []
        if self.peek().kind == ")":
            self.take()
            return ListValue((), tok.offset)
        while True:
            items.append(self.value())
            sep = self.take()
            if sep.kind == ")":
                return ListValue(tuple(items), tok.offset)
            if sep.kind != ",":
                raise self.error(f"expected ',' or ')' in list, found {_describe(sep)}", sep)


def _describe(tok: Token) -> str:
    if tok.kind == "eof":
        return "end of condition"
    if tok.kind == "str":
        return f"string {tok.text!r}"
    return f"{tok.text!r}"


def parse_condition(source: SourceText | str) -> Node:
    """Parse condition text; raises RuleSyntaxError with the position of the problem."""
    if isinstance(source, str):
        source = SourceText.plain(source)
    return _Parser(source).parse()
