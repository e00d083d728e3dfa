"""An in-memory image Source for the format, OVA, hostile-corpus and fuzz tests."""

from __future__ import annotations


class BytesSource:
    """``chunk`` lets tests vary how stream() splits the bytes; ``streamed`` counts what
    stream() handed out (to show a reader read only its part)."""

    def __init__(self, data: bytes, description: str = "s3://b/k", chunk: int | None = None):
        self.data, self.description, self.size = bytes(data), description, len(data)
        self.chunk = chunk
        self.streamed = 0

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("negative read")
        return self.data[offset : offset + length]

    def stream(self, offset: int = 0, chunk_size: int = 8 << 20):
        step = self.chunk or chunk_size
        for at in range(offset, self.size, step):
            self.streamed += min(step, self.size - at)
            yield self.data[at : at + step]
