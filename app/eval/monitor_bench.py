"""python -m app.eval.monitor_bench [--fps 30] [--seconds 120] [--gaze]: cost of DriverMonitor.update per frame.

Synthetic driver (pose noise, 5 % closed-eye frames) fed for ``--seconds`` of stream time; the
timings of the last 30 s (full 60 s windows) are reported. ``--gaze``: the faces carry an eye gaze
too (unknown on the closed-eye frames), so that the gaze rule and the neutral gaze run.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from app.core.types import FaceObservation, Gaze
from app.monitor.core import DriverMonitor


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m app.eval.monitor_bench")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--gaze", action="store_true", help="faces with an eye gaze (the gaze rule runs)")
    a = ap.parse_args(argv)
    if a.fps <= 0 or a.seconds < 31:
        print("error: --fps must be > 0 and --seconds >= 31", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    faces = [FaceObservation(box=np.array([0, 0, 100, 100.]), landmarks=np.zeros((68, 3), np.float32),
                             model="bench", yaw=float(rng.normal(0, 3)), pitch=float(rng.normal(0, 3)),
                             eye_open=(0.02, 0.02) if rng.random() < 0.05 else (0.3, 0.29), mouth_open=0.1)
             for _ in range(301)]
    if a.gaze:
        for f in faces:
            shut = f.eye_open[0] < 0.1
            f.gaze = Gaze(yaw=np.nan if shut else f.yaw + float(rng.normal(0, 3)),
                          pitch=np.nan if shut else f.pitch + float(rng.normal(0, 3)))
    mon = DriverMonitor()
    n = int(a.seconds * a.fps)
    ts = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        mon.update(i / a.fps, i, faces[i % len(faces)])
        ts[i] = time.perf_counter() - t0
    last = ts[-int(30 * a.fps):] * 1e3
    print(f"DriverMonitor.update at {a.fps:g} fps ({a.seconds:g} s stream{', gaze' if a.gaze else ''}): median {np.median(last):.3f} ms, "
          f"p90 {np.percentile(last, 90):.3f} ms, max {last.max():.3f} ms over the last 30 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
