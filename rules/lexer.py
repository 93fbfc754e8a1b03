"""Tokens of Falco's condition language."""
from __future__ import annotations

import re
from dataclasses import dataclass

from rules.errors import RuleSyntaxError

BINARY_WORD_OPS = frozenset({
    "in", "intersects", "pmatch", "contains", "icontains", "startswith", "endswith", "glob",
    "regex", "bcontains", "bstartswith",
})
SYMBOL_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
UNARY_OPS = frozenset({"exists"})
KEYWORDS = frozenset({"and", "or", "not"})

_BARE = re.compile(r"""[^\s(),="'!<>]+""")


@dataclass(frozen=True)
class Token:
    kind: str  # "(", ")", ",", "op", "word", "str", "eof"
    text: str
    offset: int


def token_length(text: str, i: int) -> int:
    """Length of the bare word or comparison operator at ``text[i]`` (a YAML key's colon
    left out), else 1: how much of a line an error at ``i`` underlines."""
    for op in SYMBOL_OPS:
        if text.startswith(op, i):
            return len(op)
    m = _BARE.match(text, i)
    if not m:
        return 1
    word = m.group(0)
    if word.endswith(":") and len(word) > 1 and text[m.end():m.end() + 1] in ("", " "):
        word = word[:-1]  # `prority: info`: the key, not its colon
    return len(word)


def tokenize(text: str, where) -> list[Token]:
    """Split condition text into tokens; ``where(offset)`` gives error positions."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in "(),":
            tokens.append(Token(ch, ch, i))
            i += 1
            continue
        if ch in "=!<>":
            for op in SYMBOL_OPS:
                if text.startswith(op, i):
                    tokens.append(Token("op", op, i))
                    i += len(op)
                    break
            else:
                raise RuleSyntaxError(f"unexpected character {ch!r}", where(i))
            continue
        if ch in "'\"":
            j = i + 1
            out = []
            while j < n and text[j] != ch:
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                    esc = {"n": "\n", "t": "\t", "\\": "\\", "'": "'", '"': '"'}.get(text[j])
                    out.append(esc if esc is not None else "\\" + text[j])
                else:
                    out.append(text[j])
                j += 1
            if j >= n:
                raise RuleSyntaxError("unterminated string", where(i))
            tokens.append(Token("str", "".join(out), i))
            i = j + 1
            continue
        m = _BARE.match(text, i)
        if not m:  # pragma: no cover - every other character starts a bare word
            raise RuleSyntaxError(f"unexpected character {ch!r}", where(i))
        word = m.group(0)
        if word in BINARY_WORD_OPS or word in UNARY_OPS:
            tokens.append(Token("op", word, i))
        else:
            tokens.append(Token("word", word, i))
        i = m.end()
    tokens.append(Token("eof", "", n))
    return tokens
