"""Secrets in database URLs (SPEC Part 2, "Fencing and fail-closed": Secrets): the password,
a raw `@` in it, and secret query keys are never shown."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from orchestrator.core.config import encode_raw_at
from orchestrator.core.secrets import is_secret_key, redact, register_url, url_secrets
from orchestrator.db.database import safe_url

HOST = "postgresql+psycopg://app:{pw}@db.example:5432/shop"


@pytest.mark.parametrize(
    ("url", "secrets"),
    [
        (HOST.format(pw="Pl4nted-one"), ["Pl4nted-one"]),
        (HOST.format(pw="Pl4nted@two"), ["Pl4nted@two"]),
        (HOST.format(pw="Pl4nted%40three"), ["Pl4nted@three"]),
        (
            "postgresql+psycopg://app@db.example/shop?sslmode=require&password=Pl4nted-four"
            "&sslpassword=Pl4nted-five&application_name=ship",
            ["Pl4nted-four", "Pl4nted-five"],
        ),
        ("postgresql://app@h/d?secret=Pl4nted-six&api_key=Pl4nted-seven", None),
        ("postgresql://app@h/d?token=Pl4nted-eight&client_secret=Pl4nted-nine", None),
    ],
)
def test_no_secret_survives_safe_url_nor_redact(url: str, secrets: list[str] | None) -> None:
    url = encode_raw_at(url)
    found = url_secrets(url)
    if secrets is not None:
        assert found == secrets
    assert found
    shown = safe_url(url)
    assert "db.example" in shown or "@h/" in shown  # still says where
    for secret in found:
        for text in (shown, redact(url), redact(f"error: cannot connect to {url} (x)")):
            assert secret not in text
            assert "Pl4nted" not in text, text


def test_a_raw_at_ends_the_password_at_the_last_at() -> None:
    """`p@ss@host`: SQLAlchemy alone would take `ss@host` for the host (and show it)."""
    raw = HOST.format(pw="Pl4nted@tail")
    assert make_url(raw).host != "db.example"  # the leak being fixed
    fixed = make_url(encode_raw_at(raw))
    assert (fixed.username, fixed.password, fixed.host, fixed.port, fixed.database) == (
        "app",
        "Pl4nted@tail",
        "db.example",
        5432,
        "shop",
    )
    assert redact(raw) == "postgresql+psycopg://app:***@db.example:5432/shop"
    for plain in (
        HOST.format(pw="ok"),
        "postgresql://db.example/shop?x=a@b",
        "sqlite:///a@b.db",
        "postgresql://h/d",
    ):
        assert encode_raw_at(plain) == plain


def test_a_registered_secret_is_masked_anywhere() -> None:
    register_url("postgresql://app@h/d?password=Pl4nted%26ten")
    assert redact('FATAL: password "Pl4nted&ten" rejected') == 'FATAL: password "***" rejected'
    assert "Pl4nted" not in redact("quoted Pl4nted%26ten")


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        ("password", True),
        ("PASSWORD", True),
        ("sslpassword", True),
        ("secret", True),
        ("client_secret", True),
        ("token", True),
        ("access_token", True),
        ("api_key", True),
        ("sslmode", False),
        ("application_name", False),
        ("host", False),
    ],
)
def test_secret_query_keys(key: str, secret: bool) -> None:
    assert is_secret_key(key) is secret


def test_secret_query_values_are_masked_even_when_never_seen_before() -> None:
    """By their key: a URL quoted in a message we did not expect, say."""
    text = "postgresql://h/d?sslmode=require&token=Unseen-1&sslpassword=Unseen-2 failed"
    assert redact(text) == "postgresql://h/d?sslmode=require&token=***&sslpassword=*** failed"
    assert redact("conninfo: host=h password=Unseen-3 port=5") == (
        "conninfo: host=h password=*** port=5"
    )
