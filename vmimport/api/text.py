"""Text as the protocols carry it: what XML 1.0 can hold, and how values are escaped into it."""

from __future__ import annotations

import re

# Characters no XML 1.0 document can carry (not even as references) and that PostgreSQL's text
# refuses (NUL); a value holding one could be stored but never answered, so it is refused.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# What escaping must still handle in stored text (written before values were checked): the
# forbidden characters become U+FFFD, and \r survives as a reference.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff\r]")
# Anything escaping changes: most values (ids, states, dates) hold none and go out as they are.
_SPECIAL = re.compile("[&<>\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff\r]")


def forbidden_character(value: str) -> str | None:
    """A description of the first character of ``value`` that no response could carry."""
    found = _FORBIDDEN.search(value)
    if found is None:
        return None
    return f"it contains the character U+{ord(found.group()):04X} at position {found.start()}, " \
           "which XML 1.0 cannot carry"


def xml_escape(text: str) -> str:
    if _SPECIAL.search(text) is None:
        return text
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if _UNSAFE.search(text):
        text = _UNSAFE.sub(lambda m: "&#13;" if m.group() == "\r" else "\ufffd", text)
    return text
