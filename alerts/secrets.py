"""Secrets (webhook URLs, HMAC keys) read from environment variables or files.

A `Secret` never shows its value in `repr`/`str`; `Redactor` scrubs known secret values
from any text (error messages, dead-letter reasons) before it is logged or stored.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from alerts.errors import SecretError

REDACTED = "***"


class Secret:
    """A secret value plus where it came from (shown instead of the value)."""

    __slots__ = ("_value", "origin")

    def __init__(self, value: str, origin: str) -> None:
        self._value = value
        self.origin = origin

    def reveal(self) -> str:
        """The secret value itself: only for building the request that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"<secret from {self.origin}>"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def read_secret(settings: Mapping[str, object], key: str, where: str,
                env: Mapping[str, str] | None = None, *, required: bool = True) -> Secret | None:
    """Resolve `<key>_env` or `<key>_file` from a sink's settings.

    A literal `<key>:` is refused: secrets must not sit in config files. Errors name
    `where` (file and sink) and the variable or file, never the value.
    """
    env = os.environ if env is None else env
    env_name, file_name = settings.get(f"{key}_env"), settings.get(f"{key}_file")
    if key in settings:
        raise SecretError(f"{where}: '{key}' is a secret: give '{key}_env' (environment "
                          f"variable) or '{key}_file' (file) instead of the value itself")
    if env_name is not None and file_name is not None:
        raise SecretError(f"{where}: give only one of '{key}_env' and '{key}_file'")
    if env_name is not None:
        if not isinstance(env_name, str) or not env_name:
            raise SecretError(f"{where}: '{key}_env' must name an environment variable")
        value = env.get(env_name)
        if not value:
            raise SecretError(f"{where}: environment variable {env_name} is not set or empty")
        return Secret(value.strip(), f"env {env_name}")
    if file_name is not None:
        if not isinstance(file_name, str) or not file_name:
            raise SecretError(f"{where}: '{key}_file' must name a file")
        try:
            value = Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SecretError(f"{where}: cannot read secret file {file_name}: "
                              f"{exc.strerror or type(exc).__name__}") from None
        if not value:
            raise SecretError(f"{where}: secret file {file_name} is empty")
        return Secret(value, f"file {file_name}")
    if required:
        raise SecretError(f"{where}: missing '{key}_env' or '{key}_file'")
    return None


class Redactor:
    """Replaces every known secret value (and URL path of secret URLs) in a text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def add(self, value: str) -> None:
        """Also scrub `value` from now on."""
        if value and len(value) >= 4 and value not in self._values:
            self._values.append(value)
            self._values.sort(key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text
