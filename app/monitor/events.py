"""The monitor's event log: JSON lines under the final name, flushed per line, fsync'd on alerts.

    log = EventLog("run.events.jsonl")
    for t, i, face in frames:
        log.write_all(monitor.update(t, i, face).events)   # complete lines, in the file at once
    log.write(monitor.summary())
    log.close()

Written by the project's one JSON-lines writer (app.io.files.JsonLinesWriter): after a crash every
line written is in the file and parses. An event that starts something the driver must be told
about (an alert start, the camera lost) is fsync'd at once; every other line within a second
(``SYNC_EVERY_S``), so a power cut loses at most the last second.
"""
from __future__ import annotations

import os

from app.io.files import JsonLinesWriter, read_jsonl

SYNC_EVERY_S = 1.0
SYNC_AT_ONCE = ("start", "camera_lost")   # "event" values fsync'd as soon as they are written


class EventLog(JsonLinesWriter):
    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "the event log", example="run.events.jsonl", sync_every_s=SYNC_EVERY_S)

    def write(self, event: dict, *, sync: bool = False) -> None:
        super().write(event, sync=sync or event.get("event") in SYNC_AT_ONCE)

    def write_all(self, events) -> None:
        for ev in events:
            self.write(ev)


def read_events(path: str | os.PathLike) -> list[dict]:
    """Every event of a log; a torn last line (the process was killed mid-write) is skipped."""
    return read_jsonl(path)
