"""Pipeline benchmark: ``python -m app.eval.bench --video FILE [--model M.onnx] [--frames N] [--no-record]
[--realtime] [--json OUT]``.

Runs the real headless path (threaded source, looping the clip -> Pipeline.process -> H.264
recording to a temp file unless --no-record) for N frames after a warm-up, and prints per-stage
median / p95 milliseconds, the end-to-end frame rate (frames / wall time of the measured loop),
the CPU time of all the process's threads per frame (what the pipeline costs, whatever else runs
on the machine) and the 1-minute load average (other processes competing for the cores).
``decode`` is the time the loop waited for the capture thread and ``encode`` the time it waited
to hand the frame to the encoder thread (decoding and encoding overlap processing, as in
main.py --headless); ``overlay`` is the drawing, done on the encoder thread while the loop goes
on (its wall time there, GIL and core sharing included); ``mesh/eyes`` runs in a worker thread
during the 3DMM in 3DMM mode ("mesh wait" = what that overlap did not hide); ``total`` is one
frame from the decode wait to the encode hand-over.
Every pipeline flag of main.py works (--detect-every, --layers, --threads, --no-smoothing ...).
The CPU table splits that CPU time by thread (from /proc/self/task, the kernel's per-thread
user + system time, read at the first and the last measured frame): the Python threads by name
(the main loop, capture, the eyes worker, the encoder), the native ones (onnxruntime's, LiteRT's,
x264's pools) by their kernel name, in ms per measured frame; threads that ended before the last
frame (a looping file's decoder threads) are one row, the process's CPU minus the others'.
``--realtime`` paces the clip at its own frame rate, newest frame first, as a camera delivers it,
and adds the capture -> outputs latency of each measured frame (``Frame.captured`` to its outputs
written) and the frames the source dropped as stale.
The JSON holds {"fps", "frames", "cpu_ms_per_frame", "cpu_threads": {thread: ms per frame},
"stage_ms": {stage: {"median", "p95"}}, "realtime", "latency_ms": {"median", "p95", "p99", "max"},
"stale_dropped", "model", "provider", "settings", "machine"}.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time

import numpy as np

from app.io.files import OutputError, atomic_write
from app.io.writer import DEFAULT_QUALITY
from app.runner import RunHooks


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for ln in f:
                if ln.startswith("model name"):
                    cpu = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}"


_TICK_MS = 1000.0 / os.sysconf("SC_CLK_TCK")


def thread_cpu_ms() -> dict[int, tuple[str, float]]:
    """CPU time (user + system, ms) of every thread of this process now: tid -> (name, ms). Python
    threads are named by their ``threading`` name, the others by the kernel's (``comm``)."""
    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:          # the thread ended between the listing and the read
            continue
        # fields after the ")" that closes comm: state is field 3, utime 14, stime 15
        rest = stat.rsplit(")", 1)[1].split()
        ms = (int(rest[11]) + int(rest[12])) * _TICK_MS
        out[int(tid)] = (names.get(int(tid), f"{comm} (native)"), ms)
    return out


def cpu_by_thread(start: dict, end: dict, frames: int) -> dict[str, float]:
    """ms of CPU per frame by thread name between two ``thread_cpu_ms`` snapshots (threads of the
    same name summed; a thread that started in between counts from 0), largest first."""
    per = {}
    for tid, (name, ms) in end.items():
        d = ms - start.get(tid, (name, 0.0))[1]
        per[name] = per.get(name, 0.0) + d / frames
    return dict(sorted(((k, v) for k, v in per.items() if v > 0), key=lambda kv: -kv[1]))


class _Latency(RunHooks):
    """Each measured frame's capture -> outputs latency (ms): from the source's hand-over
    (``Frame.captured``) to its outputs written (the recording's hand-over, the dump line)."""

    def __init__(self, warmup: int):
        self.warmup, self.n, self.ms = warmup, 0, []

    def on_result(self, runner, result, annotated, stage_ms) -> None:
        self.n += 1
        if self.n > self.warmup:
            self.ms.append((time.perf_counter() - result.frame.captured) * 1e3)

    def stats(self) -> dict:
        a = np.asarray(self.ms, np.float64)
        if not len(a):
            return {}
        return {"median": float(np.median(a)), "p95": float(np.percentile(a, 95)),
                "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def run_bench(settings, video: str, frames: int = 300, warmup: int = 20, record: bool = True,
              record_quality: str = DEFAULT_QUALITY, realtime: bool = False, record_scale: float = 1.0) -> dict:
    from app.io.capture import open_source
    from app.pipeline import Pipeline
    from app.runner import Outputs, Runner, overlay_kind_for
    from app.settings import RunOptions

    pipe = Pipeline(settings)
    # realtime: the clip is paced at its own frame rate and the newest frame wins, like a camera
    src = open_source(video, loop=True, realtime=realtime)
    latency = _Latency(warmup)
    tmpdir = tempfile.mkdtemp(prefix="bench_")
    rec = os.path.join(tmpdir, "bench.mp4")
    try:
        outputs = Outputs(RunOptions(record=rec if record else None, record_quality=record_quality,
                                     record_scale=record_scale),
                          fps=src.fps, size=src.size, live=False, overlay=overlay_kind_for(settings))
    except OutputError:
        os.rmdir(tmpdir)
        src.stop()
        raise
    snaps = {}
    dropped = {0: 0}

    def on_frame(_ms: float) -> None:
        # per-thread CPU at the end of the warm-up and at the last measured frame (before the
        # outputs close and their threads end)
        on_frame.n += 1
        if on_frame.n in (warmup, warmup + frames):
            snaps[on_frame.n] = thread_cpu_ms()
            dropped[on_frame.n] = src.frames_dropped
    on_frame.n = 0
    if warmup == 0:
        snaps[0] = thread_cpu_ms()
    try:
        rep = Runner(src, pipe, outputs, max_frames=warmup + frames, warmup=warmup, quiet=True,
                     on_frame=on_frame, hooks=latency).run()
    finally:
        if os.path.exists(rec):
            os.unlink(rec)
        os.rmdir(tmpdir)
    if rep.error:
        raise RuntimeError(rep.error)
    cpu = rep.cpu_s
    faces = rep.with_face
    wall = rep.elapsed
    threads = (cpu_by_thread(snaps[warmup], snaps[warmup + frames], frames)
               if warmup + frames in snaps else {})
    if threads:
        # threads that ended before the last snapshot (a looping file's decoder threads, say) are
        # not in the table: their CPU is the process's minus the table's
        rest = cpu * 1e3 / frames - sum(threads.values())
        if rest > 0.05:
            threads["(threads that ended, other)"] = rest
    return {
        "fps": frames / wall,
        "frames": frames,
        # CPU seconds of all threads of this process per frame: robust to other load on the machine
        "cpu_ms_per_frame": cpu * 1e3 / frames,
        "cpu_threads": threads,
        "realtime": realtime,
        # paced runs: capture -> outputs written, ms over the measured frames; frames the source
        # dropped because a newer one was there (a camera's behaviour when processing falls behind)
        "latency_ms": latency.stats(),
        "stale_dropped": (dropped.get(warmup + frames, src.frames_dropped) - dropped.get(warmup, 0)) if realtime else 0,
        "loadavg_1min": os.getloadavg()[0],
        "frames_with_face": faces,
        "stage_ms": rep.stage_ms,
        "model": pipe.model_name,
        "provider": pipe.provider,
        "record": record,
        "record_quality": record_quality if record else None,
        "settings": {"detect_every": settings.detect_every, "smoothing": settings.smoothing,
                     "threads": settings.threads, "eyes_from_mesh": settings.eyes_from_mesh,
                     "mesh_layer": settings.layers.mesh, "mesh_style": settings.layers.mesh_style},
        "machine": _machine(),
    }


ORDER = ("decode", "detect", "crop", "3dmm", "post", "mesh/eyes", "eye vis", "mesh wait", "smoothing", "gaze", "monitor", "overlay",
         "encode", "total")


def format_table(res: dict) -> str:
    lines = [f"model {res['model']} on {res['provider']}, {res['frames']} frames "
             f"({res['frames_with_face']} with a face), recording {'on' if res['record'] else 'off'}",
             f"{'stage':<10} {'median ms':>10} {'p95 ms':>8}"]
    for k in ORDER:
        if k in res["stage_ms"]:
            s = res["stage_ms"][k]
            lines.append(f"{k:<10} {s['median']:>10.2f} {s['p95']:>8.2f}")
    if res.get("cpu_threads"):
        lines.append(f"{'thread':<28} {'CPU ms/frame':>12}")
        for name, ms in res["cpu_threads"].items():
            lines.append(f"{name[:28]:<28} {ms:>12.2f}")
    lat = res.get("latency_ms") or {}
    if res.get("realtime") and lat:
        lines.append(f"paced at the clip's frame rate: latency capture -> outputs median {lat['median']:.1f} ms, "
                     f"p95 {lat['p95']:.1f}, p99 {lat['p99']:.1f}, max {lat['max']:.1f}; "
                     f"{res['stale_dropped']} measured frames dropped as stale by the source")
    lines.append(f"end-to-end {res['fps']:.1f} fps, CPU {res['cpu_ms_per_frame']:.1f} ms/frame (all threads), "
                 f"load average {res['loadavg_1min']:.1f} ({res['machine']})")
    return "\n".join(lines)


def main(argv=None) -> int:
    from app import cli

    parser = cli.build_parser(prog="python -m app.eval.bench")
    g = parser.add_argument_group("benchmark")
    g.add_argument("--frames", type=int, default=300, help="measured frames (the clip loops) (default %(default)s)")
    g.add_argument("--warmup", type=int, default=20, help="frames run before measuring (default %(default)s)")
    g.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    g.add_argument("--no-record", action="store_true", help="skip the H.264 recording stage")
    g.add_argument("--realtime", action="store_true",
                   help="pace the clip at its own frame rate, newest frame wins (a camera's timing); "
                        "prints the capture -> outputs latency (median, p95, p99)")
    args = parser.parse_args(argv)
    if not args.video:
        parser.error("--video FILE is required")
    if args.frames < 1 or args.warmup < 0:
        parser.error("--frames must be >= 1 and --warmup >= 0")
    settings = cli.settings_from_args(args)
    from app.io.capture import SourceError
    from app.model3dmm import ContractError, DeviceError

    try:
        res = run_bench(settings, args.video, args.frames, args.warmup, record=not args.no_record,
                        record_quality=args.record_quality, realtime=args.realtime,
                        record_scale=args.record_scale)
    except (SourceError, OutputError, ContractError, DeviceError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(res))
    if args.json:
        with atomic_write(args.json) as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
