"""How every command words a user-caused error: one line (which errors count as the user's, each command decides)."""

from __future__ import annotations


def error_line(e: BaseException) -> str:
    """The first line of what `e` says, worded for the unreadable file or the OS error it is."""
    from safetensors import SafetensorError

    if isinstance(e, SafetensorError):
        return f"a safetensors file could not be read (truncated or not safetensors): {e}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror + (f" ({e.filename})" if e.filename else "")
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
