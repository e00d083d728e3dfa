"""EC2 filter values as one matcher per filter: exact values in a set, the wildcard ones
(``*``, ``?``; ``\\`` escapes) run together as one bit-parallel automaton.

Why not regular expressions: compiling one regex from 200 wildcard values of 255 characters
took 0.65 s here (``re`` compiles in Python), and a backtracking engine can be made slow by
patterns like ``*a*a*a*b``. The automaton is built in one pass over the values and reads
each item value once, a character at a time: its cost is the value's length times a few
operations on one integer with a bit per pattern position, whatever the patterns hold.
"""

from __future__ import annotations

from typing import Iterable

_WILDCARDS = frozenset("*?\\")
_ANY = None  # the token of '?'


def _tokens(pattern: str) -> tuple[list[str | None], list[int]]:
    """The pattern's characters to consume (``_ANY`` for '?') and, for each position 0..m,
    whether a '*' lets that state loop (as a list of the looping positions)."""
    tokens: list[str | None] = []
    loops: list[int] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i + 1])
            i += 2
            continue
        if c == "*":
            if not loops or loops[-1] != len(tokens):
                loops.append(len(tokens))
        else:
            tokens.append(_ANY if c == "?" else c)
        i += 1
    return tokens, loops


class GlobSet:
    """Does a string match any of these wildcard patterns (whole string, case-sensitive)?

    Each pattern of m characters owns m + 1 bits (state k: its first k characters matched).
    One character moves every live state one bit up where the pattern accepts it, and keeps
    the states a '*' loops on."""

    def __init__(self, patterns: Iterable[str]):
        accepts: dict[str | None, bytearray] = {}
        size = 0
        parsed = []
        for pattern in patterns:
            tokens, star_states = _tokens(pattern)
            parsed.append((size, tokens, star_states))
            size += len(tokens) + 1
        nbytes = (size + 8) // 8
        start_bits, final_bits, loop_bits = bytearray(nbytes), bytearray(nbytes), bytearray(nbytes)
        for base, tokens, star_states in parsed:
            _set(start_bits, base)
            _set(final_bits, base + len(tokens))
            for k in star_states:
                _set(loop_bits, base + k)
            for n, token in enumerate(tokens, base + 1):  # the hot loop: no calls
                bits = accepts.get(token)
                if bits is None:
                    bits = accepts[token] = bytearray(nbytes)
                bits[n >> 3] |= 1 << (n & 7)
        starts, finals, loops = (int.from_bytes(b, "little")
                                 for b in (start_bits, final_bits, loop_bits))
        any_char = int.from_bytes(accepts.pop(_ANY, bytes(nbytes)), "little")
        self._starts, self._finals, self._loops, self._any = starts, finals, loops, any_char
        # Per character: the states it may enter ('?' positions accept every character).
        self._accepts = {c: int.from_bytes(b, "little") | any_char for c, b in accepts.items()}

    def match(self, value: str) -> bool:
        state, loops, accepts, any_char = self._starts, self._loops, self._accepts, self._any
        for c in value:
            state = ((state << 1) & accepts.get(c, any_char)) | (state & loops)
            if not state:
                return False
        return bool(state & self._finals)


def _set(bits: bytearray, n: int) -> None:
    bits[n >> 3] |= 1 << (n & 7)


class FilterValues:
    """One filter's values, ready to test items: a set lookup for values without wildcards,
    the automaton for the others, built when an item first needs it (a filter after one
    that kept no item costs nothing)."""

    def __init__(self, patterns: Iterable[str]):
        self.exact: set[str] = set()
        self.wild: list[str] = []
        for p in patterns:
            if _WILDCARDS.isdisjoint(p):
                self.exact.add(p)
            else:
                self.wild.append(p)
        self._globs: GlobSet | None = None

    @property
    def globs(self) -> GlobSet | None:
        if self._globs is None and self.wild:
            self._globs = GlobSet(self.wild)
        return self._globs

    def matches(self, values: Iterable[str | None]) -> bool:
        for v in values:
            if v is None:
                continue
            if v in self.exact or (self.wild and self.globs.match(v)):
                return True
        return False
