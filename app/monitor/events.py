"""JSON-lines event log written atomically: ``path + ".tmp"`` while open, ``os.replace`` on close.

    with EventLog("run.events.jsonl") as log:
        for ev in monitor.last_events:
            log.write(ev)
        log.write(monitor.summary())

A reader never sees a half-written file at ``path``: until close() only the ``.tmp`` exists.
close() after an exception inside the ``with`` block still publishes what was logged (the
events up to the failure are the useful part of a crash); ``discard()`` drops it instead.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def _jsonable(v: Any):
    """NaN/inf -> null (JSON has no NaN), numpy scalars/arrays -> Python numbers/lists."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tolist"):          # numpy scalar or array
        return _jsonable(v.tolist())
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class EventLog:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        if self.path.is_dir():
            raise OSError(f"event log {self.path} is a folder: give a file name such as run.events.jsonl")
        if not self.path.parent.is_dir():
            raise OSError(f"cannot write the event log {self.path}: folder {self.path.parent} does not exist "
                          f"(create it or choose another path)")
        try:
            self._f = open(self.tmp, "w", encoding="utf-8")
        except OSError as e:
            raise OSError(f"cannot write the event log {self.path}: {e.strerror or e} "
                          f"(choose a writable folder)") from None
        self.count = 0
        self.closed = False

    def write(self, event: dict) -> None:
        if self.closed:
            raise ValueError(f"event log {self.path} is already closed")
        self._f.write(json.dumps(_jsonable(event), ensure_ascii=False, allow_nan=False) + "\n")
        self.count += 1

    def write_all(self, events) -> None:
        for ev in events:
            self.write(ev)

    def close(self) -> None:
        """Flush and publish: the .tmp file becomes ``path`` (one os.replace)."""
        if self.closed:
            return
        self.closed = True
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        finally:
            self._f.close()
        os.replace(self.tmp, self.path)

    def discard(self) -> None:
        """Close without publishing: the .tmp file is removed, ``path`` is left as it was."""
        if self.closed:
            return
        self.closed = True
        self._f.close()
        try:
            os.unlink(self.tmp)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):   # never leave an open handle behind; do not publish from the GC
        f = getattr(self, "_f", None)
        if f is not None and not getattr(self, "closed", True):
            try:
                f.close()
            except Exception:
                pass


def read_events(path: str | os.PathLike) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
