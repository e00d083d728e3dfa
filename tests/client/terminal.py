"""A command run in a pseudo-terminal, as a person runs it: what it writes is read as the
screen gets it (escape codes and all), and it can be typed at and interrupted."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import termios
import time


def with_default_sigint() -> None:
    """For ``preexec_fn``: SIGINT back to its default in the child. A suite started in the
    background by a non-interactive shell (``scripts/test &``, some CI runners) inherits SIGINT
    ignored, and Python then installs no KeyboardInterrupt handler: Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _as_a_shell_starts_it() -> None:
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    with_default_sigint()


class Terminal:
    def __init__(self, argv: list[str], env: dict, columns: int = 100, rows: int = 30):
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = {**env, "TERM": "xterm-256color"}
        for name in ("COLUMNS", "LINES", "NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE"):
            env.pop(name, None)
        # Its own session, with the pty as its controlling terminal, as a shell would start it.
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env,
                                     start_new_session=True,
                                     preexec_fn=_as_a_shell_starts_it)
        os.close(slave)
        self.output = b""

    @property
    def text(self) -> str:
        return self.output.decode(errors="replace")

    @property
    def plain(self) -> str:
        """The output without escape sequences (colours, cursor moves)."""
        return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07", "", self.text)

    def _read(self, timeout: float) -> str:
        """Read what arrives within ``timeout``: "data", "idle", or "closed" once every
        process holding the pty has exited (EIO)."""
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return "idle"
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return "closed"
        self.output += chunk
        return "data" if chunk else "closed"

    def expect(self, pattern: str, timeout: float = 120) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.plain)
            if found:
                return found
            if time.monotonic() > deadline or self._read(0.2) == "closed":
                raise AssertionError(f"{pattern!r} not seen in {timeout}s; so far:\n{self.plain}")

    def type(self, text: str) -> None:
        os.write(self.master, text.encode())

    def interrupt(self) -> None:
        """Ctrl-C, typed: the terminal sends SIGINT to the command (its foreground group)."""
        self.type("\x03")

    def wait(self, timeout: float = 120) -> int:
        """The command's exit status, once it ended and all it wrote was read."""
        deadline = time.monotonic() + timeout
        while self._read(0.2) != "closed" and time.monotonic() < deadline:
            if self.proc.poll() is not None and self._read(0.2) == "idle":
                break
        return self.proc.wait(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        try:
            os.close(self.master)
        except OSError:
            pass
