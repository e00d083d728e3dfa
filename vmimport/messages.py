"""Putting user values into messages: a value the user sent comes back recognisable but bounded
(a 300 KB key echoed whole made a StatusMessage of 300 KB); messages composed of parts keep
AWS's sentence case."""

from __future__ import annotations

import re

SHOWN = 200  # characters of a user value a message repeats


def shorten(value, limit: int = SHOWN) -> str:
    """``value`` as text, cut to ``limit`` characters with how long it really was."""
    text = str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


_SENTENCE_START = re.compile(r"(?<=[.!?] )([a-z])")


def sentence_case(text: str) -> str:
    """Each sentence of a message composed from parts (a finding that begins in lower case
    placed after a full stop) starting with a capital, as AWS writes its messages."""
    text = text[:1].upper() + text[1:]
    return _SENTENCE_START.sub(lambda m: m.group(1).upper(), text)
