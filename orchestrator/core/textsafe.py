"""Text from the audit trail, made safe to show: control characters become visible escapes.

A ticket, reason or error is text someone typed. Shown raw on a terminal, a newline forges a
row, an ANSI escape repaints or hides one, and a bidi override reorders what a reader sees.
"""

from __future__ import annotations

import re

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls and DEL, C1 controls, the bidi embeddings, overrides, isolates and marks
# (U+202A-202E, U+2066-2069, U+200E/200F, U+061C) and the line/paragraph separators.
_CONTROL = re.compile(
    "[\x00-\x1f\x7f\x80-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    char = match.group(0)
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """`text` with every control character shown as an escape (`\\n`, `\\x1b`, `\\u202e`)."""
    return _CONTROL.sub(_escape, text)
