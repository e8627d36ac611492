"""Soak: ``python -m app.eval.soak --video CLIP --minutes N [--model M.onnx] [--tracemalloc]``.

Runs the real headless path (app.runner.Runner: the clip looped as fast as it goes -> Pipeline ->
H.264 recording, per-frame dump and event log, all into a temp folder removed at the end unless
``--keep DIR``) for N minutes and prints one row per minute: frames, fps, median and p95
per-frame latency (from the wait for the frame to its hand-over to the encoder), and the
process's resident memory (RSS). The last line gives the RSS growth after the first minute.
``--tracemalloc`` also traces Python allocations and prints, at the end, the 10 source lines
whose allocations grew most since the end of the first minute (what grows, when RSS does).
Not part of the test suite: it takes N minutes.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmRSS:"):
                    return int(ln.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # peak, where /proc is absent


class Minutes:
    """Per-minute rows from per-frame latencies (``on_frame`` of the Runner)."""

    def __init__(self, trace: bool, say=print):
        self.say = say
        self.trace = trace
        self.t0 = time.perf_counter()
        self.minute = 0
        self.lat: list[float] = []
        self.rows: list[dict] = []
        self.snap_1 = None
        say(f"{'minute':>6} {'frames':>7} {'fps':>6} {'median ms':>10} {'p95 ms':>7} {'RSS MB':>7}"
            + (f" {'traced MB':>9}" if trace else ""))

    def __call__(self, frame_ms: float) -> None:
        self.lat.append(frame_ms)
        now = time.perf_counter()
        if now - self.t0 >= 60.0 * (self.minute + 1):
            self.row(now)

    def row(self, now: float) -> None:
        self.minute += 1
        a = np.asarray(self.lat)
        t_prev = self.t0 + 60.0 * (self.minute - 1)
        r = {"minute": self.minute, "frames": len(a), "fps": len(a) / max(1e-9, now - t_prev),
             "median_ms": float(np.median(a)) if len(a) else 0.0,
             "p95_ms": float(np.percentile(a, 95)) if len(a) else 0.0, "rss_mb": rss_mb()}
        line = (f"{r['minute']:>6} {r['frames']:>7} {r['fps']:>6.1f} {r['median_ms']:>10.1f} {r['p95_ms']:>7.1f} "
                f"{r['rss_mb']:>7.1f}")
        if self.trace:
            r["traced_mb"] = tracemalloc.get_traced_memory()[0] / 2 ** 20
            line += f" {r['traced_mb']:>9.2f}"
            if self.minute == 1:
                self.snap_1 = tracemalloc.take_snapshot()
        self.rows.append(r)
        self.say(line)
        sys.stdout.flush()
        self.lat = []


def main(argv=None) -> int:
    from app import cli
    from app.io.capture import SourceError, open_source
    from app.io.files import OutputError
    from app.model3dmm import ContractError, DeviceError
    from app.pipeline import Pipeline
    from app.runner import Outputs, Runner, overlay_kind_for
    from app.settings import RunOptions

    parser = cli.build_parser(prog="python -m app.eval.soak")
    g = parser.add_argument_group("soak")
    g.add_argument("--minutes", type=float, default=60.0, help="how long to run (default %(default)s)")
    g.add_argument("--tracemalloc", action="store_true", help="trace Python allocations (slower)")
    g.add_argument("--keep", metavar="DIR", help="write the recording, dump and events into DIR and keep them")
    args = parser.parse_args(argv)
    if not args.video:
        parser.error("--video FILE is required")
    if args.minutes <= 0:
        parser.error("--minutes must be > 0")
    settings = cli.settings_from_args(args)
    if args.tracemalloc:
        tracemalloc.start(1)     # one frame per traceback: the source line (less overhead)
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soak_"))
    opts = RunOptions(record=str(folder / "soak.mp4"), dump=str(folder / "soak.jsonl"),
                      events=str(folder / "soak.events.jsonl") if settings.monitor is not None else None,
                      record_quality=args.record_quality)
    try:
        src = open_source(args.video, loop=True)
        outputs = Outputs(opts, fps=src.fps, size=src.size, live=False, monitor_on=settings.monitor is not None,
                          overlay=overlay_kind_for(settings))
        pipe = Pipeline(settings)
    except (SourceError, OutputError, ContractError, DeviceError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"soak: {src.name} {src.size[0]}x{src.size[1]} looped, model {pipe.model_name} on {pipe.provider}, "
          f"recording {args.record_quality}, {args.minutes:g} min; load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs")
    minutes = Minutes(args.tracemalloc)
    try:
        rep = Runner(src, pipe, outputs, quiet=True, on_frame=minutes, duration_s=args.minutes * 60.0).run()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    rows = minutes.rows
    if len(rows) >= 2:
        growth = max(r["rss_mb"] for r in rows[1:]) - rows[0]["rss_mb"]
        print(f"RSS after minute 1: {rows[0]['rss_mb']:.1f} MB, highest later {rows[0]['rss_mb'] + growth:.1f} MB "
              f"({growth:+.1f} MB), last {rows[-1]['rss_mb']:.1f} MB; fps {rows[1]['fps']:.1f} -> {rows[-1]['fps']:.1f}, "
              f"p95 {rows[1]['p95_ms']:.1f} -> {rows[-1]['p95_ms']:.1f} ms; load average {os.getloadavg()[0]:.1f}")
    if args.tracemalloc and minutes.snap_1 is not None:
        top = tracemalloc.take_snapshot().compare_to(minutes.snap_1, "lineno")[:10]
        print("allocations that grew most since minute 1:")
        for st in top:
            print(f"  {st.size_diff / 1024:+9.1f} KiB {st.count_diff:+7d} blocks  {st.traceback[0]}")
    print(f"{rep.frames} frames in {rep.elapsed:.0f} s" + (f"; {rep.error}" if rep.error else ""))
    return rep.rc


if __name__ == "__main__":
    sys.exit(main())
