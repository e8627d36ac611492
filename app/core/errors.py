"""``one_line(error)``: the first line of an exception's message, the form every user-facing error
takes (headless stderr, the window's message bar, SourceError / OutputError texts)."""
from __future__ import annotations

MAX_CHARS = 300   # a message bar / terminal line; longer texts (a traceback pasted in a message) are cut


def one_line(e: BaseException, limit: int = MAX_CHARS) -> str:
    """First non-empty line of ``str(e)`` (the exception's class name when it has no text), at most
    ``limit`` characters."""
    lines = str(e).strip().splitlines()
    return (lines[0] if lines else type(e).__name__)[:limit]
