"""Signals: a stop request that the training loop honours at a clean point, and a child that gets its parent's.

`StopRequest` turns the first SIGINT / SIGTERM into a flag; the training loop checks it at its stop points (between
stages, where no third-party code is half-way through a change) and raises `StopTraining` there. A second signal
raises KeyboardInterrupt at once. Why not raise from the handler: an exception thrown into arbitrary code leaves it
half-done; OmegaConf, interrupted while building a config, raises an AttributeError of its own instead (measured). `run_forwarding` runs a command (torchrun, relaunched by `prefix-rft train`) as a child
that receives every SIGINT / SIGTERM / SIGHUP the parent gets and dies with it (PR_SET_PDEATHSIG), so stopping the
wrapper never orphans torchrun and its workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Sequence

from prefix_rft_megatron.process.parent_death import set_parent_death_signal

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopTraining(BaseException):
    """A stop request honoured (BaseException: no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    def __init__(self, announce: bool = True) -> None:
        self.signum: int | None = None
        self.announce = announce  # say on stderr that the request was seen (rank 0)
        self._previous = {}

    def install(self) -> "StopRequest":
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # a second request: stop now
            signal.signal(signum, signal.SIG_DFL)
            raise KeyboardInterrupt
        self.signum = signum
        if self.announce:  # os.write: a handler must not take the logging module's locks
            os.write(2, f"{signal.Signals(signum).name}: stopping when the current stage of the step ends; "
                        f"send it again to stop at once\n".encode())

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum else ""

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


def run_forwarding(cmd: Sequence[str]) -> int:
    """Run `cmd`; forward SIGINT/SIGTERM/SIGHUP to it; it dies with this process. Returns its exit code."""
    proc = subprocess.Popen(list(cmd), preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM))

    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:  # only if a handler was replaced under us; keep waiting for the child
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
