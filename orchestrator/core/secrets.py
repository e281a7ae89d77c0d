"""Keep passwords out of everything we print, log or store.

A URL carries secrets in two places: its password (`user:PASSWORD@host`, where a raw `@`
may be part of the password: the last `@` before the host ends it) and its query string
(`?password=...`, `sslpassword`, `secret`, `token`, `api_key`... any key that names one).
`redact` masks both shapes in any text, and every secret value `register_url` has seen,
wherever it appears (a driver's error message quoting it, say).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlsplit

_SECRET_KEY = r"[\w.-]*(?:password|passwd|pwd|secret|token|api_?key|credential)[\w.-]*"
_IS_SECRET_KEY = re.compile(rf"^{_SECRET_KEY}$", re.IGNORECASE)
# greedy up to the last `@` of the token: a raw `@` in a password hides its tail too
_URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^\s/?#]*)(?P<tail>@)", re.IGNORECASE
)
_KEY_VALUE = re.compile(rf"(?P<key>\b{_SECRET_KEY}=)(?P<value>[^&\s'\"]+)", re.IGNORECASE)
_known: set[str] = set()
_longest_first: list[str] = []  # _known, longest first: a password inside another is masked last


def is_secret_key(key: str) -> bool:
    """Whether a URL query key names a secret (`password`, `sslpassword`, `token`...)."""
    return bool(_IS_SECRET_KEY.match(key))


def url_secrets(url: str) -> list[str]:
    """The secret values a URL holds: its password and its secret query values."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return []
    found = [unquote(password)] if password else []
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if is_secret_key(k)]
    return [v for v in found if v]


def register_url(url: str) -> None:
    """Remember the secrets of `url` so that `redact` masks them wherever they appear."""
    for secret in url_secrets(url):
        register_password(secret)


def register_password(password: str | None) -> None:
    """Remember a password so that `redact` masks it wherever it appears (in any encoding
    a URL may carry it in)."""
    if password and len(password) >= 3:
        _known.update({password, quote(password, safe=""), quote_plus(password, safe="")})
        _longest_first[:] = sorted(_known, key=len, reverse=True)


def redact(text: str) -> str:
    # each pattern needs its "://" or "=": most texts (a run's every event) have neither
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<head>***\g<tail>", text)
    if "=" in text:
        text = _KEY_VALUE.sub(r"\g<key>***", text)
    for password in _longest_first:
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
