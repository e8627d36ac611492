"""The drives of a batch: INPUT arguments (files, folders, globs, .txt / .csv manifests) -> ``Drive``.

A drive's id is ``<file stem>-<first 8 hex of sha1(resolved path)>`` (the stem with anything but
letters, digits, ``.``, ``_`` and ``-`` replaced by ``_``): stable for the same file however it is
named on the command line, distinct for two files of the same name in different folders, and the
name of the drive's folder under ``--out``.
"""
from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# what a folder is searched for (recursively); a file named explicitly is taken whatever its name
VIDEO_EXTS = (".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm", ".mpg", ".mpeg", ".ts", ".wmv", ".flv")
MANIFEST_EXTS = (".txt", ".csv")
# manifest columns the batch writes itself (a manifest may not carry them)
RESERVED = ("drive_id", "path", "status", "error")


class InputError(Exception):
    """An INPUT argument that names nothing usable (one line; exit status 2)."""


@dataclass
class Drive:
    path: str                                   # resolved absolute path
    drive_id: str
    meta: dict = field(default_factory=dict)    # manifest columns (driver, vehicle, ...), as text


def meta_columns(drives: list[Drive]) -> list[str]:
    """The manifest columns of the drives, in their first-seen order (drives.parquet, the report)."""
    cols: list[str] = []
    for d in drives:
        cols.extend(k for k in d.meta if k not in cols)
    return cols


def drive_id(path: str | os.PathLike) -> str:
    p = Path(path).expanduser().resolve()
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", p.stem)[:60] or "drive"
    return f"{stem}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"


def _drive(path: str | os.PathLike, meta: dict | None = None) -> Drive:
    p = Path(path).expanduser().resolve()
    return Drive(str(p), drive_id(p), dict(meta or {}))


def _folder(d: Path) -> list[Drive]:
    found = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTS)
    if not found:
        raise InputError(f"no video files ({', '.join(VIDEO_EXTS)}) in folder {d}")
    return [_drive(p) for p in found]


def _txt(m: Path) -> list[Drive]:
    out = []
    for line in m.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            p = Path(line).expanduser()
            out.append(_drive(p if p.is_absolute() else m.parent / p))
    if not out:
        raise InputError(f"manifest {m} lists no paths (one path a line)")
    return out


def _csv(m: Path) -> list[Drive]:
    with open(m, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
        cols = list(rows[0].keys()) if rows else []
    if "path" not in cols:
        raise InputError(f"manifest {m} has no 'path' column (a .csv manifest needs a header with path)")
    bad = [c for c in cols if c in RESERVED and c != "path"]
    if bad:
        raise InputError(f"manifest {m}: column {bad[0]!r} is written by the batch itself; rename it")
    out = []
    for r in rows:
        p = Path((r.get("path") or "").strip()).expanduser()
        if not str(p) or str(p) == ".":
            continue
        meta = {k: (v or "") for k, v in r.items() if k != "path" and k is not None}
        out.append(_drive(p if p.is_absolute() else m.parent / p, meta))
    if not out:
        raise InputError(f"manifest {m} lists no paths")
    return out


def expand(inputs: list[str]) -> list[Drive]:
    """Every drive the arguments name, in order, each file once (the first mention wins).
    ``InputError`` for an argument that names nothing (a missing file, an empty folder, a glob
    without matches, a manifest without paths). Paths inside a manifest that do not exist are
    drives all the same: they become ``failed`` rows saying so."""
    if not inputs:
        raise InputError("no INPUT: give video files, folders, globs or a .txt / .csv manifest")
    drives: list[Drive] = []
    for arg in inputs:
        p = Path(arg).expanduser()
        if p.is_dir():
            drives += _folder(p)
        elif p.is_file() and p.suffix.lower() == ".txt":
            drives += _txt(p)
        elif p.is_file() and p.suffix.lower() == ".csv":
            drives += _csv(p)
        elif p.is_file():
            drives.append(_drive(p))
        elif glob.has_magic(arg):
            hits = sorted(h for h in glob.glob(os.path.expanduser(arg), recursive=True) if Path(h).is_file())
            if not hits:
                raise InputError(f"no file matches {arg}")
            drives += [_drive(h) for h in hits]
        else:
            raise InputError(f"input not found: {arg} (give a video file, a folder, a glob or a manifest)")
    seen, out = set(), []
    for d in drives:
        if d.path not in seen:
            seen.add(d.path)
            out.append(d)
    return out
