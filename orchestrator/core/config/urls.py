"""A database URL a user gave, made safe to use and to show (checked without SQLAlchemy)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from orchestrator.core.errors import UsageError
from orchestrator.core.secrets import register_url


def given_url(raw: str, where: str) -> str:
    """A URL a user gave (a variable, an option), made safe to use and to show: a raw `@`
    in its password encoded, its secrets registered for redaction before anything can print
    them, checked, its scheme normalised. `where` names the source in the error."""
    url = encode_raw_at(raw)
    register_url(url)
    problem = _url_problem(url)
    if problem:
        raise UsageError(
            f"{where} does not hold a usable SQLAlchemy URL: {problem}. Expected e.g. "
            "postgresql+psycopg://user:password@host:5432/dbname."
        )
    return normalise_scheme(url)


def encode_raw_at(url: str) -> str:
    """`user:p@ss@host` means the password `p@ss`: the last `@` of the authority ends the
    user part (as for urllib), where SQLAlchemy would end it at the first one and take
    `ss@host` for the host. The other `@` are encoded as `%40`, which SQLAlchemy decodes."""
    scheme, sep, rest = url.partition("://")
    end = min([i for i in (rest.find(c) for c in "/?#") if i >= 0] or [len(rest)])
    userinfo, at, host = rest[:end].rpartition("@")
    if not sep or "@" not in userinfo:
        return url
    return f"{scheme}://{userinfo.replace('@', '%40')}{at}{host}{rest[end:]}"


def normalise_scheme(url: str) -> str:
    """`postgres://` (Heroku, Render, many PaaS) means `postgresql://` to SQLAlchemy."""
    scheme, sep, rest = url.partition("://")
    if sep and (scheme == "postgres" or scheme.startswith("postgres+")):
        return "postgresql" + scheme[len("postgres") :] + sep + rest
    return url


def _url_problem(url: str) -> str | None:
    """Why a URL cannot work, checked without SQLAlchemy and without echoing a secret."""
    if "://" not in url:
        return "it has no `dialect://` scheme"
    try:
        parts = urlsplit(url)
        _port = parts.port
    except ValueError:
        return "its port is not a number"
    if not re.match(r"^[a-z][a-z0-9_]*(\+[a-z0-9_]+)?$", parts.scheme):
        return f"{parts.scheme!r} is not a dialect name"
    return None
