"""Keep passwords out of everything we print, log or store."""

from __future__ import annotations

import re
from typing import Any

_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s]+)(?P<tail>@)"
)
_known: set[str] = set()


def register_password(password: str | None) -> None:
    """Remember a password so that `redact` masks it wherever it appears."""
    if password and len(password) >= 3:
        _known.add(password)


def redact(text: str) -> str:
    text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    for password in sorted(_known, key=len, reverse=True):
        text = text.replace(password, "***")
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
