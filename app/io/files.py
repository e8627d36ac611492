"""Output files: one JSON-lines log writer, one atomic write for batch products, one error type.

- ``JsonLinesWriter`` (the per-frame dump, the monitor's event log): lines go straight into the
  file under its final name, one complete line per ``write()`` system call (no buffer in this
  process), so after a crash or ``kill -9`` every line written is there and parses; a torn last
  line is the only possible loss (a disk that fills mid-line is cut back to the last complete
  line). ``sync()`` / ``sync_every_s`` add ``fsync`` for power cuts. The file is created by the
  first line: a run that writes nothing leaves nothing.
- ``atomic_write(path)``: batch products (benchmark JSON, exports) are written to a temp file
  beside ``path`` and renamed onto it, so ``path`` holds the old file or the complete new one.
- ``OutputError``: one line for the user (what, where, what to do); ``disk_full`` tells a full
  disk from other failures.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from app.core.errors import one_line


class OutputError(Exception):
    """An output cannot be written; the message is one line meant for the user."""

    def __init__(self, msg: str, *, disk_full: bool = False):
        super().__init__(msg)
        self.disk_full = disk_full


def is_disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


def write_failed(what: str, path: Path, e: BaseException, kept: str = "") -> OutputError:
    """The one line for a write that failed midway (``kept`` says what stays usable)."""
    tail = f"; {kept}" if kept else ""
    if is_disk_full(e):
        return OutputError(f"disk full: cannot write {what} {path} (no space left in {path.parent}){tail}",
                           disk_full=True)
    why = getattr(e, "strerror", None) or one_line(e)
    return OutputError(f"cannot write {what} {path}: {why}{tail}")


def probe_writable(path: Path, prefix: str, example: str) -> None:
    """OutputError("{prefix}: why (what to do)") unless ``path`` can be written. The probe leaves
    the folder as it was: a file that exists is opened without truncating, a new one is created
    and removed again."""
    if path.is_dir():
        raise OutputError(f"{prefix}: it is a folder; give a file name like {example}")
    if not path.parent.is_dir():
        raise OutputError(f"{prefix}: folder {path.parent} does not exist (create it first)")
    try:
        if path.exists():
            with open(path, "r+b"):
                pass
        else:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            os.close(fd)
            os.unlink(path)
    except (OSError, ValueError) as e:
        why = getattr(e, "strerror", None) or one_line(e)
        raise OutputError(f"{prefix}: {why} (choose a writable folder)")


def jsonable(v: Any):
    """NaN / inf -> null (JSON has no NaN), numpy scalars / arrays -> Python numbers / lists."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if hasattr(v, "tolist"):          # numpy scalar or array
        return jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class JsonLinesWriter:
    """``JsonLinesWriter(path, what)``; ``.write(obj)`` one line; ``.close()``.

    ``what`` names the file in messages ("the event log"). A failed write raises ``OutputError``
    (``disk_full`` set for ENOSPC) and the writer stops: later writes raise the same error, the
    lines before it stay in the file. ``sync_every_s``: the lines are also fsync'd at most this
    long after they were written (checked by ``write`` and ``tick``)."""

    def __init__(self, path, what: str = "the log", *, example: str = "out.jsonl",
                 sync_every_s: Optional[float] = None):
        self.path = Path(os.fspath(path)).expanduser()
        self.what = what
        probe_writable(self.path, f"cannot write {what} to {self.path}", example)
        self.sync_every_s = sync_every_s
        self.lines = 0
        self.error: Optional[OutputError] = None
        self.closed = False
        self._fd: Optional[int] = None
        self._size = 0
        self._unsynced = False
        self._last_sync = time.monotonic()

    def write(self, obj: dict, *, sync: bool = False) -> None:
        if self.closed:
            raise ValueError(f"{self.what} {self.path} is already closed")
        if self.error is not None:
            raise self.error
        data = (json.dumps(jsonable(obj), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
                + "\n").encode("utf-8")
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.ftruncate(self._fd, self._size)   # no torn line at the end
            self.error = write_failed(self.what, self.path, e, self._kept())
            raise self.error from None
        self._size += len(data)
        self.lines += 1
        self._unsynced = True
        if sync:
            self.sync()
        else:
            self.tick()

    def _kept(self) -> str:
        return f"its first {self.lines} lines are kept" if self.lines else "nothing was written to it"

    def tick(self) -> None:
        """fsync when lines are waiting longer than ``sync_every_s`` (call it regularly)."""
        if (self.sync_every_s is not None and self._unsynced
                and time.monotonic() - self._last_sync >= self.sync_every_s):
            self.sync()

    def sync(self) -> None:
        if self._fd is not None and self._unsynced and self.error is None:
            try:
                os.fsync(self._fd)
            except OSError as e:
                self.error = write_failed(self.what, self.path, e, self._kept())
                raise self.error from None
            self._unsynced = False
        self._last_sync = time.monotonic()

    def close(self) -> Optional[Path]:
        """fsync and close; idempotent. The path written, or None when no line was written."""
        if self.closed:
            return self.path if self.lines else None
        self.closed = True
        if self._fd is not None:
            try:
                if self.error is None:
                    os.fsync(self._fd)
            except OSError:
                pass    # every line is already in the file; a failed fsync loses nothing here
            finally:
                os.close(self._fd)
                self._fd = None
        return self.path if self.lines else None

    def discard(self) -> None:
        """Close and remove the file (a run that failed before it started)."""
        had_file = self._fd is not None
        self.close()
        if had_file:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):   # never leave an open descriptor behind
        fd = getattr(self, "_fd", None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def read_jsonl(path, *, allow_torn_tail: bool = True) -> list[dict]:
    """Every line of a JSON-lines file; an incomplete last line (a crash mid-write) is skipped
    when ``allow_torn_tail``."""
    data = Path(path).read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()               # b"" when the file ends with a newline
    out = [json.loads(ln) for ln in lines if ln.strip()]
    if tail.strip():
        if not allow_torn_tail:
            out.append(json.loads(tail))
    return out


@contextlib.contextmanager
def atomic_write(path, mode: str = "w", **open_kw) -> Iterator:
    """``with atomic_write("out.json") as f: ...``: written to ``.NAME.tmp`` beside it, fsync'd and
    renamed onto ``path`` when the block ends; an exception removes the temp file instead."""
    path = Path(os.fspath(path))
    tmp = path.with_name(f".{path.name}.tmp")
    f = open(tmp, mode, **open_kw)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
