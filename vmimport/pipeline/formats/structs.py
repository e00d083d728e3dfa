"""On-disk structures declared by name: a frozen dataclass over a `struct.Struct`.

Each format declares its headers once (`vmdk_structs`, `qcow2_structs`, `vhd_structs`,
`vhdx_structs`, `tar`), and readers and export writers share them: a reader says
`header.grain_size`, never `fields[4]`, and a writer packs the same class it reads.

A structure lists every byte it covers, reserved and padding bytes included, so that
`pack()` is the exact inverse of `unpack()` and a writer reproduces what it was given.
Hot loops (one marker per grain) unpack with `FORMAT` directly instead: building an object
per grain would cost more than the rest of the loop.
"""

from __future__ import annotations

import struct
from dataclasses import astuple, fields
from typing import Callable, ClassVar, Iterable, TypeVar

T = TypeVar("T", bound="Structure")


class Structure:
    """Base of the declared structures; subclasses are `@dataclass(frozen=True)` whose fields
    are `FORMAT`'s items, in order."""

    FORMAT: ClassVar[struct.Struct]
    SIZE: ClassVar[int]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.SIZE = cls.FORMAT.size

    @classmethod
    def unpack(cls: type[T], buf: bytes | memoryview, offset: int = 0) -> T:
        """The structure at `offset` of `buf` (which must hold `SIZE` bytes from there)."""
        # Filling __dict__ directly: a frozen dataclass's __init__ sets each field through
        # object.__setattr__, which made unpacking a header 3x slower.
        names = cls.__dict__.get("_names") or cls._field_names()
        value = object.__new__(cls)
        value.__dict__.update(zip(names, cls.FORMAT.unpack_from(buf, offset)))
        return value

    @classmethod
    def _field_names(cls) -> tuple[str, ...]:
        cls._names = tuple(f.name for f in fields(cls))
        return cls._names

    def pack(self) -> bytes:
        return self.FORMAT.pack(*astuple(self))


def run_checks(checks: Iterable[Callable], *args) -> None:
    """Apply a format's safety checks in order; the first that fails raises `ImportFailure`."""
    for check in checks:
        check(*args)
