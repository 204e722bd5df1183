"""Signals: a stop request that the training loop honours at a clean point, and a child that gets its parent's.

`StopRequest` turns the first SIGINT / SIGTERM into a flag (the loop then saves and exits at the end of the step);
a second one stops at once. `run_forwarding` runs a command (torchrun, relaunched by `prefix-rft train`) as a child
that receives every SIGINT / SIGTERM / SIGHUP the parent gets and dies with it (PR_SET_PDEATHSIG), so stopping the
wrapper never orphans torchrun and its workers.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Sequence

from prefix_rft_megatron.process.parent_death import set_parent_death_signal

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StopRequest:
    def __init__(self) -> None:
        self.signum: int | None = None
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
