"""``python -m app.batch INPUT... --out DIR``: recorded drives through the pipeline, many at once.

INPUT: video files, folders (searched recursively for video files), globs, or manifests (``.txt``
one path a line, ``.csv`` with a ``path`` column and any other columns, carried into drives.parquet
and the report). Every pipeline and monitor flag of main.py (generated from the same settings
fields), plus the batch's own. Writes, under DIR:

- ``<drive id>/``: frames.parquet, events.jsonl, summary.json, alerts/, recording.mp4 (--record);
  each folder appears complete or not at all (app.batch.drive);
- ``drives.parquet``: one row per drive: manifest columns, status ok | failed | skipped, summary
  fields, the error line of a failed drive;
- ``report.html`` and ``report/``: the drives table and a page per drive (app.batch.report).

Exit status: 0 every drive ok (or already complete), 1 any drive failed, 2 bad arguments (one line,
nothing written), 130 interrupted (Ctrl-C: complete drives kept, partial ones removed; a rerun
does the rest).
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from app import __version__
from app.batch.drive import PYARROW_MIN, TMP_PREFIX, DriveJob, read_summary, summary_row
from app.batch.inputs import Drive, InputError, expand, meta_columns
from app.cli import add_settings_args, settings_from_args
from app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DRIVES = "drives.parquet"
PROG = "python -m app.batch"

EPILOG = """\
--engine ray: one Ray task per drive on the cluster at --ray-address (pip install -e ".[cluster]"
on every node). --out must then be a folder that every node of the cluster sees at the same path
(a shared file system: NFS, a cluster file system); the drives are written there by the nodes
that run them. Without --ray-address, a one-machine Ray instance is started for the batch.
Exit status: 0 all drives ok, 1 any drive failed, 2 bad arguments, 130 interrupted (rerun to finish).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Recorded drives through the face and driver-monitoring "
                                "pipeline: a table, events and a summary per drive, a report for all.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="INPUT",
                   help="video files, folders (recursive), globs, or a .txt / .csv manifest (a 'path' column)")
    b = p.add_argument_group("batch")
    b.add_argument("--out", metavar="DIR", help="output folder (created; with --engine ray: on a shared file system)")
    b.add_argument("--record", action="store_true", help="write the annotated video of each drive (recording.mp4)")
    b.add_argument("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="drives at once with --engine local (default: the CPU count, %(default)s)")
    b.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local = worker processes on this machine; ray = one Ray task per drive (default local)")
    b.add_argument("--ray-address", metavar="auto|HOST:PORT", default=None,
                   help="the Ray cluster (default: start a Ray instance on this machine for the batch)")
    b.add_argument("--force", action="store_true", help="redo drives that are already complete in --out")
    b.add_argument("--quiet", action="store_true", help="no progress bar: a log line per drive")
    b.add_argument("--no-report", dest="report", action="store_false", help="skip report.html")
    add_settings_args(p, run_options=("record_quality", "record_scale"))
    # one thread per stage: the batch runs one drive per core
    p.set_defaults(threads=1, mesh_threads=1)
    return p


def git_commit() -> str:
    try:
        r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return r.stdout.strip() if r.returncode == 0 and r.stdout.strip() else "unknown"


def _usage(parser: argparse.ArgumentParser, msg: str) -> None:
    parser.error(msg)          # one line after the usage, exit 2


def parse(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    settings: Settings = settings_from_args(args, parser)
    if not args.out:
        _usage(parser, "--out DIR is required (the folder the drives are written to)")
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        _usage(parser, f"--out {out} is a file, not a folder")
    if not out.exists() and not out.parent.is_dir():
        _usage(parser, f"--out {out}: folder {out.parent} does not exist (create it first)")
    if args.workers < 1:
        _usage(parser, f"--workers must be >= 1, got {args.workers}")
    if not 0.0 < args.record_scale <= 1.0:
        _usage(parser, f"--record-scale must be in (0, 1], got {args.record_scale:g}")
    import pyarrow

    if tuple(int(x) for x in pyarrow.__version__.split(".")[:2]) < PYARROW_MIN:
        _usage(parser, f"pyarrow {pyarrow.__version__} is too old for frames.parquet (decimals on INT32, "
                       f"byte-stream-split integers): pip install 'pyarrow>={PYARROW_MIN[0]}'")
    if args.engine == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            _usage(parser, 'ray is not installed: pip install -e ".[cluster]" (or use --engine local)')
    elif args.ray_address:
        _usage(parser, "--ray-address needs --engine ray")
    model = settings.model
    if model not in (None, "mesh") and not Path(model).is_file():
        _usage(parser, f"--model {model}: file not found")
    try:
        drives = expand(args.inputs)
    except InputError as e:
        _usage(parser, str(e))
    return args, settings, out, drives


class Progress:
    """One bar: drives done / total, frames per second, hours of video per hour, ETA (tqdm); or,
    with --quiet, a log line per drive. A failed drive is always one line."""

    def __init__(self, total: int, quiet: bool):
        self.quiet = quiet
        self.t0 = time.perf_counter()
        self.frames = 0
        self.video_s = 0.0
        self.bar = None
        if not quiet:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="drive", file=sys.stderr, dynamic_ncols=True)

    def say(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg, file=sys.stderr)
        else:
            print(msg, file=sys.stderr)

    def row(self, row: dict) -> None:
        if row.get("status") == "ok":
            self.frames += int(row.get("frames") or 0)
            self.video_s += float(row.get("duration_s") or 0.0)
        el = max(1e-9, time.perf_counter() - self.t0)
        if row.get("status") == "failed":
            self.say(f"failed: {row['path']}: {row.get('error')}")
        elif self.quiet:
            print(f"{row.get('status')}: {row['path']} -> {row['drive_id']} ({row.get('frames')} frames, "
                  f"{row.get('x_realtime')}x real time)", file=sys.stderr)
        if self.bar is not None:
            self.bar.set_postfix_str(f"{self.frames / el:.1f} frames/s, {self.video_s / el:.2f} h video/h")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def write_drives(out: Path, drives: list[Drive], rows: dict) -> Path:
    """drives.parquet: one row per drive in input order (manifest columns, status, summary fields),
    written to a temp name and renamed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta_cols = meta_columns(drives)
    recs = []
    for d in drives:
        r = rows.get(d.drive_id)
        if r is None:
            continue
        rec = {"drive_id": d.drive_id, "path": d.path, **{k: d.meta.get(k) for k in meta_cols},
               "status": r.get("status"), "error": r.get("error")}
        rec.update({k: v for k, v in r.items() if k not in rec and k not in ("drive_id", "path")})
        recs.append(rec)
    cols: list[str] = []
    for r in recs:
        for k in r:
            if k not in cols:
                cols.append(k)
    strings = {"drive_id", "path", "status", "error", "model", "engine", "host", *meta_cols}
    fields = []
    for c in cols:
        if c in strings:
            typ = pa.string()
        elif c in ("frames",) or c.startswith("alerts_"):
            typ = pa.int64()
        else:
            typ = pa.float64()
        fields.append(pa.field(c, typ))
    schema = pa.schema(fields)
    data = {c: [(None if r.get(c) is None else (str(r[c]) if f.type == pa.string() else r[c]))
                for r in recs] for c, f in zip(cols, fields)}
    table = pa.Table.from_pydict(data, schema=schema)
    path = out / DRIVES
    tmp = out / f".{DRIVES}.tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def remove_stale_temps(out: Path) -> None:
    """Temp folders of drives that did not complete (a killed worker, an interrupted batch)."""
    for p in out.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def main(argv=None) -> int:
    args, settings, out, drives = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    out.mkdir(exist_ok=True)
    remove_stale_temps(out)
    version, commit = __version__, git_commit()
    rows: dict[str, dict] = {}
    todo: list[DriveJob] = []
    for d in drives:
        final = out / d.drive_id
        s = read_summary(final) if final.is_dir() else None
        if s is not None and not args.force:
            rows[d.drive_id] = {"drive_id": d.drive_id, "path": d.path, "status": "skipped", "error": None,
                                **summary_row(s)}
            continue
        if final.is_dir():           # --force, or a folder without a summary: redone
            shutil.rmtree(final)
        todo.append(DriveJob(path=d.path, drive_id=d.drive_id, out=str(out.resolve()), settings=settings,
                             record=args.record, record_quality=args.record_quality,
                             record_scale=args.record_scale, meta=d.meta,
                             engine=args.engine, app_version=version, git_commit=commit))
    prog = Progress(len(drives), args.quiet)
    for r in rows.values():
        prog.row(r)

    def on_row(row: dict) -> None:
        if row.get("status") == "interrupted":
            return
        rows[row["drive_id"]] = row
        prog.row(row)

    from app.batch.engine import Interrupted, run_local, run_ray

    interrupted = False
    try:
        if todo and args.engine == "local":
            run_local(todo, args.workers, on_row, prog.say)
        elif todo:
            run_ray(todo, args.ray_address, on_row, prog.say,
                    gpus_per_task=1.0 if settings.device == "cuda" else 0.0)
    except (Interrupted, KeyboardInterrupt):
        interrupted = True
    finally:
        prog.close()
        remove_stale_temps(out)
    path = write_drives(out, drives, rows)
    if args.report:
        from app.batch.report import write_report

        report = write_report(out, drives, rows)
        print(f"wrote {report}", file=sys.stderr)
    n_ok = sum(r["status"] == "ok" for r in rows.values())
    n_skip = sum(r["status"] == "skipped" for r in rows.values())
    n_fail = sum(r["status"] == "failed" for r in rows.values())
    print(f"{len(drives)} drives: {n_ok} ok, {n_skip} skipped (complete), {n_fail} failed"
          + (f", {len(drives) - len(rows)} not done (interrupted: run the same command again)" if interrupted else "")
          + f"; wrote {path}", file=sys.stderr)
    if interrupted:
        return 130
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
