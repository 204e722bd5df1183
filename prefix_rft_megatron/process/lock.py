"""One trainer per output directory: `<output_dir>/.lock`, held with flock(2) for the life of the process.

The kernel releases a flock when its holder dies, however it dies (SIGKILL included), so a lock left by a dead run
is simply taken over; the file's content (pid, host, start time) only serves the message that names the holder.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

LOCK_NAME = ".lock"


class OutputDirLocked(RuntimeError):
    """Another live process holds the output directory (one line)."""


class OutputDirLock:
    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK_NAME
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> "OutputDirLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputDirLocked(f"logging.output_dir={self.path.parent} is in use by {self.holder()}; wait for it "
                                  "to end, or give this run another logging.output_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def check_free(self) -> None:
        """Raise OutputDirLocked when held by a live process; leaves it free otherwise (a pre-check)."""
        self.acquire().release()
