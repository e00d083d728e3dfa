"""Putting user values into messages: a value the user sent comes back recognisable but bounded
(a 300 KB key echoed whole made a StatusMessage of 300 KB)."""

from __future__ import annotations

SHOWN = 200  # characters of a user value a message repeats


def shorten(value, limit: int = SHOWN) -> str:
    """``value`` as text, cut to ``limit`` characters with how long it really was."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"
