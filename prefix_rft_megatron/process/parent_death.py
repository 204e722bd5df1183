"""Processes that end when their parent ends, however it ends (SIGKILL and the OOM killer included).

The reward workers are the reason: a trainer killed with SIGKILL runs no clean-up, and a worker stuck in
math-verify's C big-integer code (see `pool`) would otherwise spin on as an orphan for hours.

Linux: prctl(PR_SET_PDEATHSIG, SIGKILL), delivered by the kernel, so it stops a process inside one long C call. The
"parent" is strictly the thread that created the process: create these processes from a thread that lives as long
as the owner (the main thread). Elsewhere, or if prctl fails: a daemon thread that polls os.getppid() and exits once
the process is re-parented. It only runs between Python bytecodes, so it does not stop a process stuck inside one
long C call (the GIL is not released there); it does stop an idle or ordinary one.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
POLL_S = 0.5  # the fallback watchdog's period


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _resolve_prctl():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up at import, in the parent: a child forked from a threaded process (a checkpoint writer, `checkpoint_io/dist_save.py`)
# should not dlopen before it arms the signal.
_PRCTL = _resolve_prctl()


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel for `sig` when the parent ends; False where that is not available."""
    return _PRCTL is not None and _PRCTL(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os._exit(1)


def die_with_parent(owner: int | None = None) -> str:
    """Arm this process to end with its parent: "pdeathsig" (Linux) or "watchdog" (the fallback thread).

    `owner`: a process whose death before this call must also end this one (the pool's owner, which may not be the
    parent: with the forkserver start method the parent is the forkserver). A parent already gone before either
    was armed is caught by the check afterwards."""
    parent = os.getppid()
    how = "pdeathsig" if set_parent_death_signal() else "watchdog"
    if how == "watchdog":
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watchdog").start()
    if os.getppid() != parent or (owner is not None and not pid_alive(owner)):
        os._exit(1)
    return how
